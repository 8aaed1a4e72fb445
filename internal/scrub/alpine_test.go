package scrub

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

func alpineImage(t *testing.T, o fixture.AlpineOptions) (string, *inroot.Root) {
	t.Helper()
	dir := t.TempDir()
	fixture.AlpineTree(t, dir, o)
	r, err := inroot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return dir, r
}

// TestAlpineFirstboot scrubs the Alpine-like tree with the default
// operations, then starts the firstboot service in a chroot of it as OpenRC
// does at boot (the kernel runs the script's #!/sbin/openrc-run, OpenRC's
// real one from Debian's openrc package, with the action start): new host
// keys appear, made by the tree's own ssh-keygen, openrc-run marks the
// service started, and the service has left the default runlevel.
func TestAlpineFirstboot(t *testing.T) {
	t.Run("sshd's service makes the keys", func(t *testing.T) {
		// Alpine's /etc/init.d/sshd runs ssh-keygen -A before sshd starts.
		dir, root := alpineImage(t, fixture.AlpineOptions{})
		if _, err := Run(context.Background(), root, opsNamed(t, "defaults"), Options{}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{FirstbootOpenRCService, FirstbootRunlevelLink, FirstbootScriptPath} {
			if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
				t.Errorf("%s installed, but the image's sshd service makes keys itself", p)
			}
		}
		if os.Geteuid() != 0 {
			t.Skip("running sshd's service in a chroot needs root")
		}
		// What sshd's start_pre runs before every start.
		fixture.OpenRCBooted(t, dir)
		if out, err := exec.Command("chroot", dir, "/etc/init.d/sshd", "--nodeps", "checkconfig").CombinedOutput(); err != nil {
			t.Fatalf("/etc/init.d/sshd checkconfig: %v\n%s", err, out)
		}
		assertNewHostKeys(t, dir)
	})
	t.Run("sshd_disable_keygen and firstboot_script", func(t *testing.T) {
		dir, root := alpineImage(t, fixture.AlpineOptions{NoSSHDKeygen: true})
		user := "#!/bin/sh\necho \"user script ran: $(hostname >/dev/null; echo ok)\" > /root/firstboot-user\n"
		rep, err := Run(context.Background(), root, opsNamed(t, "defaults"), Options{FirstbootScript: user})
		if err != nil {
			t.Fatal(err)
		}
		if target, err := os.Readlink(filepath.Join(dir, FirstbootRunlevelLink)); err != nil || target != FirstbootOpenRCService {
			t.Fatalf("default runlevel link: %q, %v", target, err)
		}
		for _, p := range []string{FirstbootUnit, FirstbootWantsLink, "/etc/machine-id", "/etc/systemd"} {
			if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
				t.Errorf("%s exists after the scrub of an OpenRC image without machine-id", p)
			}
		}
		if _, err := os.Lstat(filepath.Join(dir, "etc/ssh/ssh_host_ed25519_key")); err == nil {
			t.Fatal("ssh-hostkeys left the factory's key")
		}
		if js, _ := rep.MarshalJSON(); !strings.Contains(string(js), FirstbootRunlevelLink) {
			t.Errorf("the report does not name %s: %s", FirstbootRunlevelLink, js)
		}
		if os.Geteuid() != 0 {
			t.Skip("running the service in a chroot needs root")
		}
		// --nodeps: the service's need localmount would start OpenRC's
		// localmount, which is not in the tree and mounts filesystems.
		fixture.OpenRCBooted(t, dir)
		out, err := exec.Command("chroot", dir, FirstbootOpenRCService, "--nodeps", "start").CombinedOutput()
		if err != nil {
			t.Fatalf("%s start in the chroot: %v\n%s", FirstbootOpenRCService, err, out)
		}
		t.Logf("%s --nodeps start:\n%s", FirstbootOpenRCService, out)
		assertNewHostKeys(t, dir)
		if got, err := os.ReadFile(filepath.Join(dir, "root/firstboot-user")); err != nil || string(got) != "user script ran: ok\n" {
			t.Errorf("firstboot_script: %q, %v", got, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, FirstbootRunlevelLink)); err == nil {
			t.Error("the service is still in the default runlevel after its run")
		}
		if !strings.Contains(string(out), "imagefactory first boot") {
			t.Errorf("the service's start did not run through openrc-run's ebegin:\n%s", out)
		}
		if _, err := os.Lstat(filepath.Join(dir, "run/openrc/started/imagefactory-firstboot")); err != nil {
			t.Errorf("openrc-run did not mark the service started: %v\n%s", err, out)
		}
	})
}

// TestMachineIDKinds: absent stays absent (Alpine), systemd images get
// uninitialized, OpenRC images without systemd, ostree sysroots,
// deployments and bootc images an empty file.
func TestMachineIDKinds(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef\n"
	const deployed = "/ostree/deploy/fedora/deploy/0a1b2c.0/etc/machine-id"
	tests := []struct {
		name  string
		files map[string]string
		links map[string]string
		want  map[string]string // path -> content; "-" absent
	}{
		{"never had one", map[string]string{"/etc/alpine-release": "3.20.3\n"}, nil, map[string]string{"/etc/machine-id": "-"}},
		{"systemd", map[string]string{"/etc/machine-id": id}, nil, map[string]string{"/etc/machine-id": machineIDUninitialized}},
		{"openrc", map[string]string{"/etc/machine-id": id, "/etc/runlevels/default/.keep": ""}, nil, map[string]string{"/etc/machine-id": ""}},
		{"openrc and systemd", map[string]string{"/etc/machine-id": id, "/etc/runlevels/default/.keep": "", "/usr/lib/systemd/systemd": "elf"}, nil,
			map[string]string{"/etc/machine-id": machineIDUninitialized}},
		{"ostree sysroot", map[string]string{"/ostree/repo/config": "[core]\n", deployed: id,
			"/ostree/deploy/fedora/deploy/0a1b2c.0/usr/lib/ostree/prepare-root.conf": "[composefs]\n"},
			map[string]string{"/ostree/deploy/fedora/deploy/0a1b2c.0/ostree": "sysroot/ostree"},
			map[string]string{deployed: "", "/etc/machine-id": "-"}},
		{"ostree deployment", map[string]string{"/usr/lib/ostree/prepare-root.conf": "[composefs]\nenabled = yes\n",
			"/sysroot/.keep": "", "/etc/machine-id": id}, map[string]string{"/ostree": "sysroot/ostree"}, map[string]string{"/etc/machine-id": ""}},
		{"ostree-boot", map[string]string{"/usr/lib/ostree-boot/vmlinuz": "k", "/etc/machine-id": id}, nil, map[string]string{"/etc/machine-id": ""}},
		{"bootc", map[string]string{"/usr/lib/bootc/install/00-defaults.toml": "[install]\n", "/etc/machine-id": id}, nil,
			map[string]string{"/etc/machine-id": ""}},
		{"bootc without machine-id", map[string]string{"/usr/lib/bootc/install/00-defaults.toml": "[install]\n"}, nil,
			map[string]string{"/etc/machine-id": "-"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, root := newImage(t, tt.files, tt.links)
			if _, err := Run(context.Background(), root, opsNamed(t, "machine-id"), Options{}); err != nil {
				t.Fatal(err)
			}
			for p, want := range tt.want {
				data, err := os.ReadFile(filepath.Join(dir, p))
				if want == "-" {
					if err == nil {
						t.Errorf("%s created: %q", p, data)
					}
					continue
				}
				if err != nil || string(data) != want {
					t.Errorf("%s = %q, %v; want %q", p, data, err, want)
				}
			}
		})
	}
}

// assertNewHostKeys: ssh-keygen -A made the RSA, ECDSA and Ed25519 host
// keys (the factory's Ed25519 key was removed by the scrub).
func assertNewHostKeys(t *testing.T, dir string) {
	t.Helper()
	for _, k := range []string{"rsa", "ecdsa", "ed25519"} {
		key, err := os.ReadFile(filepath.Join(dir, "etc/ssh/ssh_host_"+k+"_key"))
		if err != nil || !strings.Contains(string(key), "PRIVATE KEY") || string(key) == fixture.AlpineFactoryKey {
			t.Errorf("host key %s: %v\n%s", k, err, key)
		}
	}
}
