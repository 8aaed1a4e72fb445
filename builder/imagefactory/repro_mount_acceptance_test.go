package imagefactory_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestAccReproducibleBaseImage builds the same base image (the Debian
// replica) three times with the same provisioning and the scrub: twice
// with one SOURCE_DATE_EPOCH, which must give the same raw disk byte for
// byte, and once with another, which must not. Everything the provisioner
// and the scrub change goes through the kernel's ext4 (a loop mount), so
// this is ext4repro's test in a real build; the shell provisioner's own
// upload (/tmp/script_N.sh, a random name) is in it too.
func TestAccReproducibleBaseImage(t *testing.T) {
	a := newAcc(t)
	disk := fixture.DebianMinbaseDisk(t)
	baseSum := fixture.Sha256(t, disk.Path)
	tmpl := template("", `
  provisioner "shell" {
    inline = [
      "echo 'a fixed file' > /etc/factory-fixed",
      "rm /etc/issue.net",
      "head -c 3000000 /dev/urandom > /var/tmp/junk && sync && rm /var/tmp/junk",
      "mkdir -p /opt/app && for i in $(seq 1 300); do echo $i > /opt/app/file-$i; done",
      "ln -s /opt/app/file-1 /usr/local/bin/app",
    ]
  }
  post-processor "imagefactory-scrub" {}
`)
	env := a.Env
	build := func(out string, epoch int64) (string, string) {
		t.Helper()
		a.Env = append(append([]string(nil), env...), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", epoch))
		res := mustBuild(t, a, tmpl, map[string]string{"base": disk.Path, "out": out})
		img := filepath.Join(a.Dir, out, "t.raw")
		fixture.FsckPartition(t, img, disk.Root())
		return img, res.Output
	}
	const epoch = 1767225600 // 2026-01-01T00:00:00Z
	first, out := build("out1", epoch)
	second, _ := build("out2", epoch)
	for _, want := range []string{"Filesystems normalized for a reproducible build", "Normalized partition 1 (ext4)"} {
		if !strings.Contains(out, want) {
			t.Errorf("the build output does not say %q:\n%s", want, out)
		}
	}
	if regexp.MustCompile(`(?i)warning: reproducible`).MatchString(out) {
		t.Errorf("a warning about reproducibility on an ext4-only disk:\n%s", out)
	}
	if got := readOut(t, first, disk.Root(), "/etc/factory-fixed"); got != "a fixed file\n" {
		t.Errorf("/etc/factory-fixed: %q", got)
	}
	if fixture.FileExistsOnDisk(t, first, disk.Root().Offset, "/etc/issue.net") {
		t.Error("/etc/issue.net was deleted by the provisioner but is in the output")
	}
	fixture.RequireSameDisks(t, first, second)
	third, _ := build("out3", epoch+86400)
	if fixture.Sha256(t, third) == fixture.Sha256(t, first) {
		t.Error("another SOURCE_DATE_EPOCH gave the same disk")
	}
	if got := fixture.Sha256(t, disk.Path); got != baseSum {
		t.Errorf("the base image changed: sha256 %s, was %s", got, baseSum)
	}
	a.assertNoLeaks(t)
}
