package imagefactory_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// alpineElement is an element whose hook is POSIX sh, for the elements
// provisioner on an image without bash.
func alpineElement(t *testing.T) string {
	dir := t.TempDir()
	p := filepath.Join(dir, "alpine-sh", "install.d", "50-sh")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nset -eu\necho \"$DISTRO_NAME $DIB_INIT_SYSTEM\" > /root/element-during-build\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAccAlpineLike: one chroot build on the Alpine-like disk (busybox ash
// as /bin/sh, no bash, no systemd, OpenRC, no machine-id) with the shell,
// file and elements provisioners, then imagefactory-scrub; the output is
// read from a read-only mount. Then a busybox disk without /bin/sh fails
// before any provisioner with one error naming the image.
func TestAccAlpineLike(t *testing.T) {
	t.Run("build and scrub", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) {
			fixture.AlpineOverlay(t, dir, fixture.AlpineOptions{NoSSHDKeygen: true})
		}})
		baseSum := fixture.Sha256(t, disk.Path)
		upload := filepath.Join(a.Dir, "upload.txt")
		if err := os.WriteFile(upload, []byte("from the file provisioner\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		mustBuild(t, a, template(fmt.Sprintf("  mount_path = %q", filepath.Join(a.Base, "mnt", "{{.BuildName}}")), fmt.Sprintf(`
  provisioner "shell" {
    inline = [
      "set -e",
      "if command -v bash; then echo 'bash in the image' >&2; exit 1; fi",
      "cat /etc/alpine-release > /root/release-during-build",
      "ls -l /bin/sh | grep -q busybox && echo busybox > /root/sh-during-build",
    ]
  }
  provisioner "file" {
    source      = %q
    destination = "/root/uploaded.txt"
  }
  provisioner "imagefactory-elements" {
    elements      = ["alpine-sh"]
    elements_path = [%q]
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
  }
`, upload, alpineElement(t))), map[string]string{"base": disk.Path})
		if fixture.Sha256(t, disk.Path) != baseSum {
			t.Error("the base image changed")
		}
		img := filepath.Join(a.out(), "t.raw")
		fixture.WithReadOnlyMount(t, img, disk.Root(), func(dir string) {
			read := func(p string) string {
				b, err := os.ReadFile(filepath.Join(dir, p))
				if err != nil {
					t.Errorf("%s: %v", p, err)
				}
				return string(b)
			}
			for p, want := range map[string]string{
				"root/release-during-build": fixture.AlpineRelease + "\n",
				"root/sh-during-build":      "busybox\n",
				"root/uploaded.txt":         "from the file provisioner\n",
				"root/element-during-build": "alpine openrc\n",
			} {
				if got := read(p); got != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			if target, err := os.Readlink(filepath.Join(dir, scrub.FirstbootRunlevelLink)); err != nil || target != scrub.FirstbootOpenRCService {
				t.Errorf("firstboot in the default runlevel: %q, %v", target, err)
			}
			if !strings.HasPrefix(read(scrub.FirstbootOpenRCService), "#!/sbin/openrc-run\n") {
				t.Error("the firstboot service is not an openrc-run script")
			}
			for _, p := range []string{"etc/machine-id", "etc/ssh/ssh_host_ed25519_key", "tmp/in_target.d", "usr/sbin/policy-rc.d", "etc/systemd"} {
				if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
					t.Errorf("/%s is in the output", p)
				}
			}
			if !strings.Contains(read("etc/resolv.conf"), fixture.ResolvConfMarker) {
				t.Error("the image's resolv.conf was not put back")
			}
		})
		fixture.E2fsck(t, img, disk.Root().Offset)
		assertNoOwnLeaks(t, a)
	})

	t.Run("no /bin/sh", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) {
			if err := os.Remove(filepath.Join(dir, "bin/sh")); err != nil {
				t.Fatal(err)
			}
		}})
		baseSum := fixture.Sha256(t, disk.Path)
		res := a.Build(t, template(fmt.Sprintf("  mount_path = %q", filepath.Join(a.Base, "mnt", "{{.BuildName}}")), `
  provisioner "shell" {
    inline = ["echo never > /root/never"]
  }
`), map[string]string{"base": disk.Path})
		if res.ExitCode == 0 {
			t.Fatalf("the build of an image without /bin/sh succeeded:\n%s", res.Output)
		}
		want := "base image " + disk.Path + " has no usable /bin/sh"
		if !strings.Contains(res.Output, want+" (it does not exist)") || strings.Contains(res.Output, "mnt/t/bin/sh") || !strings.Contains(res.Output, "Packer's shell provisioner needs /bin/sh") {
			t.Errorf("the build output lacks %q:\n%s", want, res.Output)
		}
		if strings.Contains(res.Output, "Provisioning with shell") {
			t.Errorf("a provisioner ran:\n%s", res.Output)
		}
		if fixture.Sha256(t, disk.Path) != baseSum {
			t.Error("the base image changed")
		}
		assertNoOwnLeaks(t, a)
	})
}
