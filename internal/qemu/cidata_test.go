package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestNewKey(t *testing.T) {
	k, err := NewKey("imagefactory-build-x")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(k.Private)
	if err != nil {
		t.Fatalf("private key does not parse: %v", err)
	}
	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(k.AuthorizedKey))
	if err != nil {
		t.Fatalf("public key line %q does not parse: %v", k.AuthorizedKey, err)
	}
	if comment != "imagefactory-build-x" || pub.Type() != ssh.KeyAlgoED25519 {
		t.Errorf("public key = %s %q", pub.Type(), comment)
	}
	if string(pub.Marshal()) != string(signer.PublicKey().Marshal()) {
		t.Error("public key does not match the private key")
	}
	k2, _ := NewKey("imagefactory-build-x")
	if k2.AuthorizedKey == k.AuthorizedKey {
		t.Error("two keys are the same")
	}
}

// The seed read back through go-diskfs, and through the kernel's view
// (blkid) where available: label cidata, Rock Ridge names, contents.
func TestWriteSeed(t *testing.T) {
	for _, tc := range []struct {
		name string
		seed Seed
	}{
		{"defaults", Seed{UserData: DefaultUserData("root", "ssh-ed25519 AAAA k"), MetaData: DefaultMetaData("i-1", "factory")}},
		{"with network-config", Seed{UserData: "#cloud-config\n", MetaData: "instance-id: x\n", NetworkConfig: "version: 2\n"}},
		{"large user-data", Seed{UserData: "#cloud-config\n# " + strings.Repeat("x", 300000) + "\n", MetaData: "instance-id: big\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "seed.iso")
			if err := WriteSeed(path, tc.seed); err != nil {
				t.Fatal(err)
			}
			label, files, err := ReadSeed(path)
			if err != nil {
				t.Fatal(err)
			}
			if label != SeedLabel {
				t.Errorf("label = %q, want %q", label, SeedLabel)
			}
			want := map[string]string{"user-data": tc.seed.UserData, "meta-data": tc.seed.MetaData}
			if tc.seed.NetworkConfig != "" {
				want["network-config"] = tc.seed.NetworkConfig
			}
			if len(files) != len(want) {
				t.Errorf("files %v, want %d", keys(files), len(want))
			}
			for n, c := range want {
				if files[n] != c {
					t.Errorf("%s = %.80q, want %.80q", n, files[n], c)
				}
			}
			if out, err := exec.Command("blkid", "-o", "export", path).Output(); err == nil {
				if !strings.Contains(string(out), "LABEL="+SeedLabel) || !strings.Contains(string(out), "TYPE=iso9660") {
					t.Errorf("blkid sees %q, want an iso9660 labelled cidata", out)
				}
			}
			if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
				t.Errorf("WriteSeed left %d files beside the seed", len(ents)-1)
			}
		})
	}
}

func TestDefaultUserData(t *testing.T) {
	root := DefaultUserData("root", "ssh-ed25519 AAAA c")
	for _, w := range []string{"#cloud-config\n", "disable_root: false", `- "ssh-ed25519 AAAA c"`} {
		if !strings.Contains(root, w) {
			t.Errorf("root user-data lacks %q:\n%s", w, root)
		}
	}
	if strings.Contains(root, "ssh_pwauth") {
		t.Errorf("root user-data sets ssh_pwauth (cloud-init would edit sshd_config and restart sshd mid-build):\n%s", root)
	}
	other := DefaultUserData("packer", "ssh-ed25519 AAAA c")
	if !strings.Contains(other, `name: "packer"`) || !strings.Contains(other, "NOPASSWD") || strings.Contains(other, "disable_root") {
		t.Errorf("user-data for packer:\n%s", other)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
