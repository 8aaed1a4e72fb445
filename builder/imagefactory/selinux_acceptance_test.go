package imagefactory_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestAccSELinux: an enforcing Debian image with selinux-policy-default,
// labelled offline. The provisioners write a tool, a config file and a web
// page in a new directory; the build relabels them with the image's
// setfiles in the chroot, the scrub relabels its own writes with the
// host's setfiles -r. Afterwards `setfiles -n -v` over the whole output
// finds nothing to relabel, and untouched files (one with a label an admin
// set by hand) keep their labels. The modes off and firstboot, the host's
// setfiles, and the image without its policy are internal/selinux's tests.
func TestAccSELinux(t *testing.T) {
	a := newAcc(t)
	disk := fixture.SELinuxDisk(t)
	sample := []string{"/etc/passwd", "/usr/bin/ls", "/var/log", "/etc/ssh/sshd_config", fixture.SELinuxAdminPath}
	labels := func(dir string) map[string]string {
		m := map[string]string{}
		for _, p := range sample {
			buf := make([]byte, 256)
			n, err := unix.Lgetxattr(filepath.Join(dir, p), "security.selinux", buf)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			m[p] = strings.TrimRight(string(buf[:n]), "\x00")
		}
		return m
	}
	// wouldRelabel lists what `setfiles -n -v` over the whole tree would
	// change, but the admin's own label.
	wouldRelabel := func(dir string) map[string]bool {
		fc := filepath.Join(dir, "etc/selinux/default/contexts/files/file_contexts")
		out, err := exec.Command("setfiles", "-n", "-v", "-r", dir, fc, dir).CombinedOutput()
		if err != nil {
			t.Fatalf("setfiles -n -v: %v\n%s", err, out)
		}
		m := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if (strings.Contains(line, "Would relabel") || strings.Contains(line, "Relabeled")) &&
				!strings.Contains(line, " "+dir+fixture.SELinuxAdminPath+" ") {
				m[strings.ReplaceAll(line, dir, "")] = true
			}
		}
		return m
	}
	var before map[string]string
	fixture.WithReadOnlyMount(t, disk.Path, disk.Root(), func(dir string) { before = labels(dir) })

	res := mustBuild(t, a, template(``, `
  provisioner "shell" {
    inline = [
      "printf '#!/bin/sh\\necho tool\\n' > /usr/local/bin/tool && chmod 755 /usr/local/bin/tool",
      "echo setting=1 > /etc/app.conf",
      "mkdir -p /var/www/html && echo '<p>factory</p>' > /var/www/html/index.html",
    ]
  }
  post-processor "imagefactory-scrub" {}
`), map[string]string{"base": disk.Path})
	for _, want := range []string{
		// The three written paths' roots (/var/www is new), plus what the
		// build put back: resolv.conf and the service(8) wrapper.
		"SELinux: relabelled 5 changed paths with the image's setfiles (policy default)",
		"with the host's setfiles -r (policy default)",
	} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("the build's output lacks %q:\n%s", want, res.Output)
		}
	}
	fixture.WithReadOnlyMount(t, filepath.Join(a.out(), "t.raw"), disk.Root(), func(dir string) {
		for line := range wouldRelabel(dir) {
			t.Errorf("setfiles -n -v after the build: %s", line)
		}
		for _, p := range []string{"/usr/local/bin/tool", "/etc/app.conf", "/var/www/html/index.html", "/etc/machine-id"} {
			buf := make([]byte, 256)
			if _, err := unix.Lgetxattr(filepath.Join(dir, p), "security.selinux", buf); err != nil {
				t.Errorf("%s has no label: %v", p, err)
			}
		}
		after := labels(dir)
		for p, l := range before {
			if after[p] != l {
				t.Errorf("untouched %s: label %q, was %q", p, after[p], l)
			}
		}
	})
	a.assertNoLeaks(t)
}
