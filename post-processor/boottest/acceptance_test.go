package boottest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// page is what the image's web server serves.
const page = "made by the imagefactory boot test fixture"

// webImage builds, from the bootable Debian 12 tree (kernel, sshd,
// cloud-init), a GPT disk with GRUB whose web service (python3's
// http.server, enabled) serves page on port 80 and whose network is
// systemd-networkd's DHCP; scrubbed and sparsified to a zstd qcow2 (with
// its .sha256 beside it), then boot-tested by extra post-processors.
func webImage(extra string) string {
	return `
source "imagefactory" "t" {
  source_rootfs    = "{{tarball}}"
  partition_table  = "gpt"
  output_directory = "out"
  mount_path       = "${path.cwd}/mnt"
}
build {
  sources = ["source.imagefactory.t"]
  provisioner "shell" {
    inline = [
      "mkdir -p /srv/www && echo '` + page + `' > /srv/www/index.html",
      "printf '[Unit]\\nDescription=web page\\nAfter=network.target\\n[Service]\\nExecStart=/usr/bin/python3 -m http.server 80 --directory /srv/www\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/web.service",
      "systemctl enable web.service",
      "printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=yes\\n' > /etc/systemd/network/80-dhcp.network",
      "systemctl enable systemd-networkd.service",
    ]
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {
      format      = "qcow2"
      compression = "zstd"
    }
` + extra + `
  }
}
`
}

// bootTestOf tests files alone: the null builder, artifice naming them.
func bootTestOf(file, pp string) string {
	return `
source "null" "t" { communicator = "none" }
build {
  sources = ["source.null.t"]
  post-processors {
    post-processor "artifice" { files = ["` + file + `"] }
    ` + pp + `
  }
}
`
}

// TestAccBootTest: imagefactory-boottest passes a good image (an HTTP
// check, a TCP port, the login prompt, SSH through the image's cloud-init
// and every built-in check, inline commands over SSH) without writing a
// byte of it, and fails, naming the cause and showing the console's last
// lines, images derived from it (qcow2 overlays edited offline) that have
// no kernel, whose web service is not enabled, and whose SSH host keys
// were not regenerated. After each run, passed or failed: no QEMU, no
// overlay, no loop device, mount or journal of this test is left.
func TestAccBootTest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mounts, FUSE")
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-storage-daemon", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (scripts/install-deps.sh)", tool)
		}
	}
	tarball := fixture.DebianRootfs(t, true)
	h := fixture.Packer(t)
	before := fixture.LeakSnapshot()
	state := filepath.Join(h.Base, "state")
	h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+state)
	noLeftovers := func(t *testing.T) {
		t.Helper()
		before.AssertNoLeaksIn(t, h.Base) // QEMU among them: it holds the overlay there
		left, _ := filepath.Glob(filepath.Join(state, "boottest", "*"))
		journals, _ := filepath.Glob(filepath.Join(state, "*.journal"))
		if len(left)+len(journals) > 0 {
			t.Errorf("left in the state directory: %v %v", left, journals)
		}
	}

	res := h.Build(t, strings.ReplaceAll(webImage(`
    post-processor "imagefactory-boottest" {
      login_prompt = true
      tcp_ports    = [80]
      http {
        url           = "http://www.example.test/index.html"
        body_contains = "`+page+`"
      }
      inline = [
        "systemctl is-active web.service",
        "test \"$(cat /proc/1/comm)\" = systemd",
        "grep -q '`+page+`' /srv/www/index.html",
      ]
    }
`), "{{tarball}}", tarball), nil)
	if res.ExitCode != 0 {
		t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	img := filepath.Join(h.Dir, "out", "t.qcow2")
	console := filepath.Join(h.Dir, "out", "t.console.log")
	for _, want := range []string{
		"The image has cloud-init: SSH through a NoCloud seed",
		"HTTP http://www.example.test/index.html (guest port 80): met",
		"TCP port 80: met", "login prompt on the serial console: met", "SSH as root (guest port 22): met",
		"check host-keys: ok", "check machine-id: ok", "check hostname: ok: boottest-", "check system-running: ok: running",
		"inline[0]: systemctl is-active web.service", "    active",
		"Boot test passed",
	} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("the output lacks %q:\n%s", want, res.Output)
		}
	}
	// The artifact is what sparsify wrote and hashed before the boot test.
	sum, err := os.ReadFile(img + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	base := fixture.Sha256(t, img)
	if want := base + "  t.qcow2\n"; string(sum) != want {
		t.Errorf("the artifact changed in the boot test: sha256 %s, sparsify wrote %q", base, sum)
	}
	if b, err := os.ReadFile(console); err != nil || !strings.Contains(string(b), "login:") {
		t.Errorf("the console log %s does not show the boot: %v", console, err)
	}
	noLeftovers(t)

	for _, tc := range []struct {
		name string
		edit func(t *testing.T, root string)
		pp   string
		want []string
	}{
		{"no-kernel", func(t *testing.T, root string) {
			for _, glob := range []string{"boot/vmlinuz*", "vmlinuz*"} {
				files, _ := filepath.Glob(filepath.Join(root, glob))
				for _, f := range files {
					if err := os.Remove(f); err != nil {
						t.Fatal(err)
					}
				}
			}
		}, `post-processor "imagefactory-boottest" {}`,
			[]string{"boot: the console shows the boot cannot succeed: the boot loader found no kernel", "vmlinuz"}},
		{"service-not-enabled", func(t *testing.T, root string) {
			disableCloudInit(t, root)
			if err := os.Remove(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/web.service")); err != nil {
				t.Fatal(err)
			}
		}, `post-processor "imagefactory-boottest" {
      settle_timeout = "20s"
      http { url = "http://localhost/" }
    }`, []string{"waiting for HTTP http://localhost/ (guest port 80)", "not met 20s after systemd reported the boot finished (systemctl is-system-running: running"}},
		{"host-keys-kept", func(t *testing.T, root string) {
			disableCloudInit(t, root)
			// The factory's keys, as a build whose scrub was skipped
			// leaves them.
			if out, err := exec.Command("ssh-keygen", "-A", "-f", root).CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen -A: %v: %s", err, out)
			}
		}, `post-processor "imagefactory-boottest" {}`,
			[]string{"check host-keys", "the guest's sshd offers host keys the image held before the boot", "ssh-ed25519 SHA256:", "/etc/ssh/ssh_host_ed25519_key", "they were not regenerated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(h.Dir, tc.name+".qcow2")
			editedOverlay(t, img, bad, func(root string) { tc.edit(t, root) })
			res := h.Build(t, bootTestOf(bad, tc.pp), nil)
			if res.ExitCode == 0 {
				t.Fatalf("the boot test passed:\n%s", res.Output)
			}
			if i := strings.Index(res.Output, "* Post-processor failed"); i >= 0 {
				t.Logf("%s in %s:\n%s", tc.name, res.Duration.Round(time.Second), res.Output[i:])
			}
			for _, want := range append(tc.want, "failed its boot test", "Last lines of the serial console ("+filepath.Join(h.Dir, tc.name+".console.log")+")") {
				if !strings.Contains(res.Output, want) {
					t.Errorf("the output lacks %q:\n%s", want, res.Output)
				}
			}
			noLeftovers(t)
		})
	}
	// A plugin killed with SIGKILL mid-boot leaves QEMU and its overlay
	// running; the next boot test (the kernel-less image's: seconds)
	// reaps them first.
	t.Run("killed-then-reaped", func(t *testing.T) {
		run := h.Start(t, bootTestOf(filepath.Join(h.Dir, "service-not-enabled.qcow2"), `post-processor "imagefactory-boottest" {}`), nil)
		run.WaitForOutput(t, "Booting service-not-enabled.qcow2 on a throwaway overlay", 2*time.Minute)
		run.WaitForPlugin(t, 10*time.Second)
		for _, pid := range run.PluginPIDs() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(time.Second)
		run.Interrupt(t, syscall.SIGKILL)
		run.Wait()
		if fixture.Pgrep(t, "qemu-system.*"+h.Base) == "" {
			t.Fatal("no QEMU left by the killed run: the test proves nothing")
		}
		res := h.Build(t, bootTestOf(filepath.Join(h.Dir, "no-kernel.qcow2"), `post-processor "imagefactory-boottest" {}`), nil)
		if !strings.Contains(res.Output, "Released what an earlier, killed build left behind") || !strings.Contains(res.Output, "found no kernel") {
			t.Errorf("the next run did not reap the killed one's, or did not test its image:\n%s", res.Output)
		}
		noLeftovers(t)
	})
	if got := fixture.Sha256(t, img); got != base {
		t.Errorf("the image under the overlays changed: sha256 %s, was %s", got, base)
	}
}

// disableCloudInit makes cloud-init step aside (cloud-init.disabled): the
// boot test then injects its key offline, and the boot is shorter.
func disableCloudInit(t *testing.T, root string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, "etc/cloud/cloud-init.disabled"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}
