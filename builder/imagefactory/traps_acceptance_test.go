package imagefactory_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// sfdiskPartition is partition n of img as sfdisk (not our code) reads it,
// in bytes.
func sfdiskPartition(t *testing.T, img string, n int) (start, size int64) {
	t.Helper()
	tab, err := fixture.ReadTable(t, img)
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", img, err)
	}
	for _, p := range tab.PartitionTable.Partitions {
		if strings.HasSuffix(p.Node, fmt.Sprintf("%s%d", filepath.Base(img), n)) {
			return p.Start * tab.PartitionTable.SectorSize, p.Size * tab.PartitionTable.SectorSize
		}
	}
	t.Fatalf("partition %d missing from the table of %s: %+v", n, img, tab.PartitionTable.Partitions)
	return 0, 0
}

// checkPreload checks that partition p of img holds the fixture's
// /etc/ld.so.preload unchanged (bytes, mode, owner) and nothing beside it.
func checkPreload(t *testing.T, img string, p fixture.Partition) {
	t.Helper()
	fixture.WithReadOnlyMount(t, img, p, func(dir string) {
		fi, err := os.Lstat(filepath.Join(dir, "etc/ld.so.preload"))
		if err != nil {
			t.Fatalf("/etc/ld.so.preload is not back: %v", err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "etc/ld.so.preload"))
		st := fi.Sys().(*syscall.Stat_t)
		if string(b) != fixture.Preload || fi.Mode() != fixture.PreloadMode || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("/etc/ld.so.preload came back as %q mode %v owner %d:%d, want %q mode %v owner 0:0",
				b, fi.Mode(), st.Uid, st.Gid, fixture.Preload, os.FileMode(fixture.PreloadMode))
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "etc/ld.so.preload?*")); len(left) > 0 {
			t.Errorf("left beside it: %v", left)
		}
	})
}

// TestAccUbuntuLayout builds on the Ubuntu cloud image layout (root is
// partition 1 and lies last, after 14 BIOS boot, 15 ESP, 16 /boot) with
// disk_size growth, an /etc/ld.so.preload naming a missing library, and an
// ESP (vfat, fstab umask=0077: mounted by a kernel with vfat, staged with
// mtools by one without) whose mount point /boot/efi does not exist in /boot. A shell
// provisioner writes in /, /boot and /boot/efi. The output is inspected
// from outside. (TestAccFirmwareRefused covers the read-only placeholder.)
func TestAccUbuntuLayout(t *testing.T) {
	a := newAcc(t)
	vfat := fixture.KernelMountsVFAT(t)
	disk := fixture.UbuntuDisk(t, fixture.UbuntuOptions{NoEFIMountPoint: true, Tree: func(dir string) { fixture.PreloadTree(t, dir) }})
	baseSum := fixture.Sha256(t, disk.Path)
	const newSize = 384 << 20
	res := mustBuild(t, a, template(fmt.Sprintf(`  disk_size = "%d"`, newSize), fmt.Sprintf(`
  provisioner "shell" {
    inline = [
      "echo in-root > /root/written-in-root",
      "echo in-boot > /boot/written-in-boot",
      "%s && echo DYN-TRUE-RAN",
      "if echo x > /boot/efi/written-in-esp; then echo ESP-WRITE-SUCCEEDED; else echo ESP-WRITE-FAILED; fi",
      "echo ESP-MODE-$(stat -c %%a /boot/efi)",
    ]
  }
  post-processors {
    post-processor "imagefactory-scrub" {
      operations = ["defaults", "-tmp-files"]
    }
    post-processor "imagefactory-sparsify" {}
  }
`, fixture.DynamicTrue)), map[string]string{"base": disk.Path})
	out := res.Output

	// The session: no loader error, the ESP staged with umask=0077's modes.
	// glibc's loader says "ERROR: ld.so: object ... from /etc/ld.so.preload cannot be preloaded".
	if strings.Contains(out, "ERROR: ld.so") || strings.Contains(out, "cannot be preloaded") || !strings.Contains(out, "DYN-TRUE-RAN") {
		t.Errorf("the dynamically linked program printed a loader error or did not run:\n%s", out)
	}
	if !strings.Contains(out, "Moved the image's /etc/ld.so.preload") {
		t.Errorf("the build did not say it moved /etc/ld.so.preload aside:\n%s", out)
	}
	wants := []string{"Mounted /boot/efi", "ESP-WRITE-SUCCEEDED", "ESP-MODE-700"}
	if !vfat {
		wants = append(wants, "its files are staged in a tmpfs", "Wrote back /boot/efi (FAT on partition 15")
	}
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("the output does not say %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "Grew partition 1, the one that ends last") {
		t.Errorf("the build did not grow partition 1:\n%s", out)
	}
	// Scrub and sparsify find the root, numbered 1 but lying last, and
	// /boot; the ESP's vfat is not trimmed (sparsify trims ext*, xfs and btrfs).
	for _, want := range []string{"Every change is listed in", "partition 1 (ext4): trimmed", "partition 16 (ext4): trimmed"} {
		if !strings.Contains(out, want) {
			t.Errorf("scrub or sparsify output lacks %q:\n%s", want, out)
		}
	}

	if fixture.Sha256(t, disk.Path) != baseSum {
		t.Error("the base image changed")
	}
	img := filepath.Join(a.out(), "t.raw")
	if fixture.FileSize(t, img) != newSize {
		t.Fatalf("artifact is %d bytes, want %d", fixture.FileSize(t, img), newSize)
	}
	verifyGPT(t, img)
	byNumber := map[int]fixture.Partition{}
	for _, p := range disk.Partitions {
		byNumber[p.Number] = p
	}

	// Root: grown to the end of the disk (GPT keeps 33 sectors for its
	// backup), clean, holding the provisioner's file and the preload file.
	root := byNumber[1]
	start, size := sfdiskPartition(t, img, 1)
	if start != root.Offset || start+size != newSize-33*512 {
		t.Errorf("partition 1 is at %d+%d, want %d up to %d", start, size, root.Offset, newSize-33*512)
	}
	grownRoot := grownExt4(t, img, root, size)
	if got := readOut(t, img, grownRoot, "/root/written-in-root"); got != "in-root\n" {
		t.Errorf("/root/written-in-root = %q", got)
	}
	checkPreload(t, img, grownRoot)

	// 14 is byte-identical; 15 (the ESP) has the write, read with mtools,
	// and fsck.fat finds it clean; 16 (/boot) has the write and no stray
	// efi directory.
	for _, n := range []int{14} {
		p := byNumber[n]
		if s, z := sfdiskPartition(t, img, n); s != p.Offset || z != p.Size {
			t.Errorf("partition %d moved or changed size", n)
		}
		if fixture.PartitionSHA256(t, img, p) != fixture.PartitionSHA256(t, disk.Path, p) {
			t.Errorf("partition %d changed", n)
		}
	}
	esp := byNumber[15]
	if s, z := sfdiskPartition(t, img, 15); s != esp.Offset || z != esp.Size {
		t.Errorf("partition 15 moved or changed size")
	}
	fixture.FsckPartition(t, img, esp)
	if got, ok := fixture.FATFile(t, img, esp, "/written-in-esp"); !ok || got != "x\n" {
		t.Errorf("/boot/efi/written-in-esp in the output's ESP = %q (found %v)", got, ok)
	}
	boot := byNumber[16]
	fixture.FsckPartition(t, img, boot)
	if got := readOut(t, img, boot, "/written-in-boot"); got != "in-boot\n" {
		t.Errorf("/boot/written-in-boot = %q", got)
	}
	if fixture.FileExistsOnDisk(t, img, boot.Offset, "/efi") {
		t.Error("the build left a stray /boot/efi directory in the /boot filesystem")
	}
	a.assertNoLeaks(t)
}

// TestAccPreloadReapedAfterKill: the plugin is killed with SIGKILL while
// /etc/ld.so.preload is moved aside; the next build's reaper puts it back
// in the killed build's disk (kept here through a second link to it, since
// the reaper removes the working disk's name) before unmounting it.
func TestAccPreloadReapedAfterKill(t *testing.T) {
	a := newAcc(t)
	disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) { fixture.PreloadTree(t, dir) }})
	out := killMidBuild(t, a, template(``, `provisioner "shell" { inline = ["echo FACTORY-SLEEPING", "sleep 300"] }`),
		map[string]string{"base": disk.Path, "out": "killed"})
	// The killed build's root is still mounted, the file still aside:
	// otherwise this test proves nothing.
	m := regexp.MustCompile(`Mounted the root filesystem at (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the killed build did not say where it mounted the root:\n%s", out)
	}
	if _, err := os.Lstat(filepath.Join(m[1], "etc/ld.so.preload")); !os.IsNotExist(err) {
		t.Fatalf("/etc/ld.so.preload is in place in the killed build's mounted root (%v)", err)
	}
	if _, err := os.Lstat(filepath.Join(m[1], "etc/ld.so.preload.imagefactory-orig")); err != nil {
		t.Fatalf("the killed build's root has no moved-aside /etc/ld.so.preload: %v", err)
	}

	work, _ := filepath.Glob(filepath.Join(a.Dir, "killed", ".*.work.raw"))
	if len(work) != 1 {
		t.Fatalf("the killed build's working disk: %v", work)
	}
	kept := filepath.Join(a.Dir, "kept.raw")
	if err := os.Link(work[0], kept); err != nil {
		t.Fatal(err)
	}
	res := mustBuild(t, a, template(``, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": disk.Path})
	if !strings.Contains(res.Output, "/etc/ld.so.preload back") {
		t.Errorf("the reaper did not say it put /etc/ld.so.preload back:\n%s", res.Output)
	}
	checkPreload(t, kept, disk.Root())
	fixture.FsckPartition(t, kept, disk.Root())
	checkPreload(t, filepath.Join(a.out(), "t.raw"), disk.Root())
	a.assertNoLeaks(t)
}

// TestAccGrowRefusalAndNoop: disk_size on a disk whose root lies before a
// logical swap partition is refused before anything is written, naming
// the swap partition and what to do; disk_size equal to the disk's size
// builds and changes nothing of the table.
func TestAccGrowRefusalAndNoop(t *testing.T) {
	t.Run("logical-swap-after-root", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.LogicalSwapDisk(t)
		sum := fixture.Sha256(t, disk.Path)
		res := a.Build(t, template(`  disk_size = "1G"`, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": disk.Path})
		if res.ExitCode == 0 {
			t.Fatalf("the growth was not refused:\n%s", res.Output)
		}
		for _, want := range []string{
			"disk_size 1G: base image " + disk.Path,
			"partition 5 (Linux swap, logical, in extended partition 2) lies after partition 1",
			"leave disk_size unset",
		} {
			if !strings.Contains(res.Output, want) {
				t.Errorf("the refusal does not say %q:\n%s", want, res.Output)
			}
		}
		for _, line := range strings.Split(res.Output, "\n") {
			if strings.Contains(line, "disk_size 1G") && strings.Contains(line, ".work.raw") {
				t.Errorf("the refusal names the working file, not the user's input: %s", line)
			}
		}
		if fixture.Sha256(t, disk.Path) != sum {
			t.Error("the base image changed")
		}
		if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
			t.Errorf("output directory left after a refused build: %v", err)
		}
		a.assertNoLeaks(t)
	})
	t.Run("same-size-is-a-no-op", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{})
		sum := fixture.Sha256(t, disk.Path)
		res := mustBuild(t, a, template(fmt.Sprintf(`  disk_size = "%dM"`, disk.Size>>20), `provisioner "shell" { inline = ["true"] }`),
			map[string]string{"base": disk.Path})
		want := fmt.Sprintf("disk_size %dM is the base image's size already: nothing to grow", disk.Size>>20)
		if !strings.Contains(res.Output, want) {
			t.Errorf("the build does not say %q:\n%s", want, res.Output)
		}
		img := filepath.Join(a.out(), "t.raw")
		if fixture.FileSize(t, img) != disk.Size {
			t.Errorf("artifact is %d bytes, want %d", fixture.FileSize(t, img), disk.Size)
		}
		if s, z := sfdiskPartition(t, img, 1); s != disk.Root().Offset || z != disk.Root().Size {
			t.Errorf("the root partition changed: %d+%d, want %d+%d", s, z, disk.Root().Offset, disk.Root().Size)
		}
		if fixture.Sha256(t, disk.Path) != sum {
			t.Error("the base image changed")
		}
		a.assertNoLeaks(t)
	})
}
