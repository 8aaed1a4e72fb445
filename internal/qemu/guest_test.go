package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// inspectDir opens dir as an image root (closed at the test's end) and
// records its state for user.
func inspectDir(t *testing.T, dir, user, key string) (*inroot.Root, *GuestState) {
	t.Helper()
	root, err := inroot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	g, err := Inspect(root, user, key)
	if err != nil {
		t.Fatal(err)
	}
	return root, g
}

// A factory boot, simulated on a directory: inject the key, then what the
// boot would write (host keys, cloud-init state and network config, a
// machine id, a lease); Undo leaves the image as it was, the user's own
// authorized key and the image's own network file kept.
func TestGuestStateRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: InjectKey gives the key to the image user's ids")
	}
	key, err := NewKey("imagefactory-build-test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		user      string
		preKeys   string // authorized_keys before, "" = none
		wantAfter map[string]string
		wantGone  []string
	}{
		{"root, no keys before", "root", "", nil, []string{"/root/.ssh"}},
		{"root, a key of its own", "root", "ssh-ed25519 AAAAmine me@laptop\n",
			map[string]string{"/root/.ssh/authorized_keys": "ssh-ed25519 AAAAmine me@laptop\n"}, nil},
		{"another user", "debian", "", nil, []string{"/home/debian/.ssh"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{
				"etc/passwd":                                  "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n",
				"etc/ssh/sshd_config":                         "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\n",
				"etc/machine-id":                              "",
				"etc/systemd/network/50-dhcp.network":         "[Match]\n",
				"etc/systemd/network/10-cloud-init-x.network": "image's own\n",
			}
			os.MkdirAll(filepath.Join(dir, "root"), 0o700)
			os.MkdirAll(filepath.Join(dir, "home/debian"), 0o755)
			os.MkdirAll(filepath.Join(dir, "etc/ssh/sshd_config.d"), 0o755)
			if tc.preKeys != "" {
				files["root/.ssh/authorized_keys"] = tc.preKeys
			}
			writeTree(t, dir, files)
			root, err := inroot.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()

			g, err := Inspect(root, tc.user, key.AuthorizedKey)
			if err != nil {
				t.Fatal(err)
			}
			if err := g.InjectKey(root); err != nil {
				t.Fatal(err)
			}
			ak := filepath.Join(dir, g.Home, ".ssh/authorized_keys")
			data, _ := os.ReadFile(ak)
			if !strings.Contains(string(data), key.AuthorizedKey) || !strings.HasPrefix(string(data), tc.preKeys) {
				t.Errorf("authorized_keys after InjectKey = %q", data)
			}
			fi, _ := os.Stat(ak)
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("authorized_keys mode %v", fi.Mode())
			}
			dropIn := filepath.Join(dir, sshdDropIn)
			if _, err := os.Stat(dropIn); (err == nil) != (tc.user == "root") {
				t.Errorf("sshd drop-in present = %v for user %s", err == nil, tc.user)
			}

			// What the boot writes.
			writeTree(t, dir, map[string]string{
				"etc/ssh/ssh_host_ed25519_key":                   "secret",
				"etc/ssh/ssh_host_ed25519_key.pub":               "pub",
				"etc/machine-id":                                 "0123456789abcdef0123456789abcdef\n",
				"var/lib/cloud/instances/i-1/obj.pkl":            "x",
				"var/lib/cloud/data/instance-id":                 "i-1",
				"var/log/cloud-init.log":                         "log",
				"etc/systemd/network/10-cloud-init-eth0.network": "generated",
				"var/lib/dhcp/dhclient.eth0.leases":              "lease",
				"var/lib/systemd/random-seed":                    "seed",
			})

			rep, err := g.Undo(context.Background(), root, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			for _, gone := range append([]string{
				"/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub", "/var/lib/cloud/instances",
				"/var/lib/cloud/data", "/var/log/cloud-init.log", "/etc/systemd/network/10-cloud-init-eth0.network",
				"/var/lib/dhcp/dhclient.eth0.leases", "/var/lib/systemd/random-seed", sshdDropIn,
			}, tc.wantGone...) {
				if _, err := os.Lstat(filepath.Join(dir, gone)); err == nil {
					t.Errorf("%s still there after Undo", gone)
				}
			}
			for p, want := range map[string]string{
				"/etc/machine-id": "uninitialized\n",
				"/etc/systemd/network/10-cloud-init-x.network": "image's own\n",
				"/etc/systemd/network/50-dhcp.network":         "[Match]\n",
			} {
				if got, _ := os.ReadFile(filepath.Join(dir, p)); string(got) != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			for p, want := range tc.wantAfter {
				if got, _ := os.ReadFile(filepath.Join(dir, p)); string(got) != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			if len(rep.Changes) == 0 {
				t.Error("empty report")
			}
			// A second Undo finds nothing of the factory left.
			rep, err = g.Undo(context.Background(), root, time.Time{})
			if err != nil || len(rep.Changes) != 0 {
				t.Errorf("second Undo: %v, changes %+v", err, rep.Changes)
			}
		})
	}
}

func TestInjectKeyUnknownUser(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"})
	root, g := inspectDir(t, dir, "packer", "ssh-ed25519 AAAA c")
	if err := g.InjectKey(root); err == nil || !strings.Contains(err.Error(), `"packer" is not in the image's /etc/passwd`) {
		t.Errorf("InjectKey for a missing user = %v", err)
	}
}

// The home directory is a symlink out of the image: the key lands inside
// the image, never on the host.
func TestInjectKeyConfined(t *testing.T) {
	dir := t.TempDir()
	host := t.TempDir()
	writeTree(t, dir, map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"})
	if err := os.Symlink(host, filepath.Join(dir, "root")); err != nil {
		t.Fatal(err)
	}
	root, err := inroot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	g, err := Inspect(root, "root", "ssh-ed25519 AAAA c")
	if err != nil {
		t.Fatal(err)
	}
	g.InjectKey(root)
	if _, err := os.Stat(filepath.Join(host, ".ssh")); err == nil {
		t.Errorf("the key was written on the host through the image's /root symlink")
	}
}
