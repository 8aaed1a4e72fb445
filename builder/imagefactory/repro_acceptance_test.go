package imagefactory_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// reproSource is a bootable GPT disk (BIOS boot, EFI system partition,
// ext4 root) from the cached bootable Debian tarball, raw, reproducible at
// var.epoch; the fstab names the root by UUID, to check it.
func reproSource(tarball string) string {
	return fmt.Sprintf(`
  source_rootfs     = %q
  source_date_epoch = var.epoch
  fstab_by          = "uuid"
  format            = "raw"
`, tarball)
}

// TestAccReproducibleTree runs the real Packer twice on the same cached
// tree with the same epoch, without provisioners: the raw disks are equal
// byte for byte (on a mismatch the test says where they differ: partition,
// ext4 block group, inode and path). The UUIDs the disk's fstab and grub.cfg name are those blkid
// finds, and fsck.ext4 -fn finds the root clean. (Booting such a disk is
// TestAccRootfsTarballChained's and the bootstrap tests' part.)
func TestAccReproducibleTree(t *testing.T) {
	a := newAcc(t)
	tarball := fixture.DebianRootfs(t, true)
	tmpl := `
variable "epoch" { type = string }
` + treeTemplate(reproSource(tarball), "")
	build := func(name, epoch string) string {
		t.Helper()
		out := filepath.Join(a.Dir, name)
		res := mustBuild(t, a, tmpl, map[string]string{"out": out, "epoch": epoch})
		if want := "Reproducible: SOURCE_DATE_EPOCH " + epoch + " (2026-01-01T00:00:00Z), build "; !strings.Contains(res.Output, want) {
			t.Errorf("the builder does not say %q:\n%s", want, res.Output)
		}
		t.Logf("build %s at epoch %s: %s", name, epoch, res.Duration)
		return filepath.Join(out, "t.raw")
	}
	first := build("first", "1767225600")
	second := build("second", "1767225600")
	a.assertNoLeaksHere(t)
	checkReproUUIDs(t, first)
	fixture.RequireSameDisks(t, first, second)
	// That another epoch gives other bytes is TestAccReproduciblePipeline's
	// part (raw and qcow2): one build fewer here.
}

var reUUID = regexp.MustCompile(`UUID=([0-9a-f-]{36})|--set=root ([0-9a-f-]{36})`)

// checkReproUUIDs: every UUID in the root's /etc/fstab and
// /boot/grub/grub.cfg is the root filesystem's as blkid reads it, and the
// root is clean.
func checkReproUUIDs(t *testing.T, raw string) {
	t.Helper()
	root := lastPartition(t, raw, "ext4")
	out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "UUID", "-O", fmt.Sprint(root.Offset), raw).Output()
	if err != nil {
		t.Fatalf("blkid on the root: %v", err)
	}
	uuid := strings.TrimSpace(string(out))
	for _, f := range []string{"/etc/fstab", "/boot/grub/grub.cfg"} {
		text := readOut(t, raw, root, f)
		ms := reUUID.FindAllStringSubmatch(text, -1)
		if len(ms) == 0 {
			t.Errorf("%s names no UUID:\n%s", f, text)
		}
		for _, m := range ms {
			if got := m[1] + m[2]; got != uuid {
				t.Errorf("%s names UUID %s; the root filesystem's is %s", f, got, uuid)
			}
		}
	}
	fixture.E2fsck(t, raw, root.Offset)
}
