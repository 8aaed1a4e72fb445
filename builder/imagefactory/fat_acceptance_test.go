package imagefactory_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// firmwareParts are the Raspberry Pi-style disk's firmware and root
// partitions.
func firmwareParts(disk fixture.DiskInfo) (fw, root fixture.Partition) {
	fw, _ = disk.Find("/boot/firmware")
	return fw, disk.Root()
}

// TestAccFirmwarePartition builds on a Raspberry Pi OS-like MBR disk
// (FAT32 firmware partition 1 at 4 MiB, ext4 root 2 last; a busybox root of
// the host's architecture). "edit": a provisioner edits
// /boot/firmware/cmdline.txt with sed -i, appends to config.txt, creates a
// file, deletes one and makes a directory: mtools reads each change in the
// output and fsck.fat -n finds it clean. "grow": disk_size grows the disk,
// then root partition 2 and its ext4, and the firmware partition keeps its
// files (byte for byte where it is staged). Where the kernel lacks vfat
// the FAT is staged and written back, and the output says so; where it
// has vfat, the FAT is mounted, and the outcome is checked the same way.
func TestAccFirmwarePartition(t *testing.T) {
	vfat := fixture.KernelMountsVFAT(t)
	disk := fixture.FirmwareDisk(t, fixture.FirmwareDiskOptions{})
	fw, root := firmwareParts(disk)
	baseSum := fixture.Sha256(t, disk.Path)

	t.Run("edit", func(t *testing.T) {
		a := newAcc(t)
		res := mustBuild(t, a, template(``, `
  provisioner "shell" {
    inline = [
      "set -e",
      "grep -q rootwait /boot/firmware/cmdline.txt",
      "sed -i 's/rootwait/rootwait quiet splash/' /boot/firmware/cmdline.txt",
      "echo dtoverlay=vc4-kms-v3d >> /boot/firmware/config.txt",
      "echo made-in-build > /boot/firmware/ssh.txt",
      "rm /boot/firmware/issue.txt",
      "mkdir -p /boot/firmware/overlays/custom",
      "echo overlay > '/boot/firmware/overlays/custom/My Long Overlay Name.dtbo'",
      "echo FW-MODE-$(stat -c %a:%u /boot/firmware/config.txt)",
      "echo in-root > /root/written-in-root",
    ]
  }
`), map[string]string{"base": disk.Path})
		out := res.Output
		wants := []string{
			"Mounted /boot/firmware (partition 1",
			"FW-MODE-755:0", // vfat's defaults: root, umask 022
		}
		staged := []string{
			"its files are staged in a tmpfs",
			"Wrote back /boot/firmware (FAT on partition 1",
			"4 file(s) written, 1 directory(ies) made, 1 path(s) removed",
		}
		if !vfat {
			wants = append(wants, staged...)
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("the output does not say %q:\n%s", want, out)
			}
		}
		if vfat && strings.Contains(out, staged[0]) {
			t.Errorf("a kernel that mounts vfat staged the FAT:\n%s", out)
		}
		// Says which branch ran (internal/vfatguest asserts it on a vfat kernel).
		t.Logf("the FAT /boot/firmware was %s (KernelMountsVFAT = %v)", map[bool]string{true: "staged in a tmpfs", false: "mounted by the kernel"}[strings.Contains(out, staged[0])], vfat)
		img := filepath.Join(a.out(), "t.raw")
		fixture.FsckPartition(t, img, fw)
		want := map[string]string{
			"/cmdline.txt": strings.Replace(fixture.FirmwareCmdline, "rootwait", "rootwait quiet splash", 1),
			"/config.txt":  fixture.FirmwareConfig + "dtoverlay=vc4-kms-v3d\n",
			"/ssh.txt":     "made-in-build\n",
			"/overlays/custom/My Long Overlay Name.dtbo": "overlay\n",
			"/bcm2711-rpi-4-b.dtb":                       strings.Repeat("dtb", 10000),
		}
		for p, w := range want {
			if got, ok := fixture.FATFile(t, img, fw, p); !ok || got != w {
				t.Errorf("%s in the output's FAT: %.60q (found %v), want %.60q", p, got, ok, w)
			}
		}
		wantList := []string{"/bcm2711-rpi-4-b.dtb", "/cmdline.txt", "/config.txt", "/overlays/", "/overlays/README",
			"/overlays/custom/", "/overlays/custom/My Long Overlay Name.dtbo", "/overlays/disable-bt.dtbo", "/ssh.txt"}
		if got := fixture.FATList(t, img, fw); !slices.Equal(got, wantList) {
			t.Errorf("the output's FAT holds %q, want %q", got, wantList)
		}
		// The root got its write, and nothing landed beneath the mount point.
		fixture.FsckPartition(t, img, root)
		if got := readOut(t, img, root, "/root/written-in-root"); got != "in-root\n" {
			t.Errorf("/root/written-in-root = %q", got)
		}
		if fixture.FileExistsOnDisk(t, img, root.Offset, "/boot/firmware/ssh.txt") {
			t.Error("ssh.txt landed in the root filesystem beneath /boot/firmware")
		}
		if fixture.Sha256(t, disk.Path) != baseSum {
			t.Error("the base image changed")
		}
		a.assertNoLeaks(t)
	})

	t.Run("grow", func(t *testing.T) {
		a := newAcc(t)
		const newSize = 384 << 20
		res := mustBuild(t, a, template(fmt.Sprintf(`  disk_size = "%d"`, newSize), `
  provisioner "shell" { inline = ["cat /boot/firmware/cmdline.txt", "df -k / | tail -n 1 | awk '{print $2}' > /root/size-kib"] }
`), map[string]string{"base": disk.Path})
		if !strings.Contains(res.Output, "Grew partition 2") {
			t.Errorf("the build did not say it grew partition 2:\n%s", res.Output)
		}
		if !vfat && (!strings.Contains(res.Output, "(FAT on partition 1") || !strings.Contains(res.Output, "no change")) {
			t.Errorf("the build did not say the firmware partition had no change:\n%s", res.Output)
		}
		img := filepath.Join(a.out(), "t.raw")
		if fixture.FileSize(t, img) != newSize {
			t.Fatalf("artifact is %d bytes, want %d", fixture.FileSize(t, img), newSize)
		}
		// sfdisk reads the new table: 1 where it was, 2 from where it
		// was to the end of the disk (MBR keeps no backup at the end).
		if s, z := sfdiskPartition(t, img, 1); s != fw.Offset || z != fw.Size {
			t.Errorf("partition 1 is at %d+%d, want %d+%d", s, z, fw.Offset, fw.Size)
		}
		s, z := sfdiskPartition(t, img, 2)
		if s != root.Offset || s+z != newSize {
			t.Errorf("partition 2 is at %d+%d, want from %d to the end of the disk (%d)", s, z, root.Offset, newSize)
		}
		tab, err := fixture.ReadTable(t, img)
		if err != nil || tab.PartitionTable.Label != "dos" || tab.PartitionTable.ID != fixture.FirmwareDiskID {
			t.Errorf("the table is %+v (%v), want dos with id %s (root=PARTUUID in cmdline.txt names it)", tab.PartitionTable, err, fixture.FirmwareDiskID)
		}
		grown := grownExt4(t, img, root, z)
		var kib int64
		fmt.Sscan(readOut(t, img, grown, "/root/size-kib"), &kib)
		if kib*1024 < root.Size+64<<20 {
			t.Errorf("the root filesystem had %d KiB during the build; want it grown before provisioning", kib)
		}
		// Staged, nothing is written back; mounted, the kernel may
		// still update a directory entry's access date, so there the
		// files are compared.
		if !vfat && fixture.PartitionSHA256(t, img, fw) != fixture.PartitionSHA256(t, disk.Path, fw) {
			t.Error("the firmware partition changed")
		}
		if got, want := fixture.FATList(t, img, fw), fixture.FATList(t, disk.Path, fw); !slices.Equal(got, want) {
			t.Errorf("the firmware partition holds %q, want %q", got, want)
		}
		if got, _ := fixture.FATFile(t, img, fw, "/cmdline.txt"); got != fixture.FirmwareCmdline {
			t.Errorf("cmdline.txt in the output = %q", got)
		}
		fixture.FsckPartition(t, img, fw)
		a.assertNoLeaks(t)
	})
}

// TestAccFirmwareRefused: what a FAT cannot hold fails the build with one
// error naming the mount point and the path; a corrupted FAT, and
// fat_mounts = "placeholder", get the read-only placeholder; a provisioner
// that fails after writing to the FAT, and a build killed while the FAT
// is staged, leave nothing behind. The write-back's refusals, the
// placeholder and the corrupted FAT are staging's (a kernel without vfat);
// the failed and killed builds are checked on both kinds of kernel.
func TestAccFirmwareRefused(t *testing.T) {
	vfat := fixture.KernelMountsVFAT(t)
	disk := fixture.FirmwareDisk(t, fixture.FirmwareDiskOptions{})
	fw, _ := firmwareParts(disk)
	baseSum := fixture.Sha256(t, disk.Path)
	writeTry := `"if echo x > /boot/firmware/try.txt; then echo FW-WRITE-SUCCEEDED; else echo FW-WRITE-FAILED; fi"`

	t.Run("symlink", func(t *testing.T) {
		fixture.SkipUnlessStaged(t, "the write-back's refusal of a symbolic link")
		a := newAcc(t)
		res := a.Build(t, template(``, `
  provisioner "shell" { inline = ["ln -s cmdline.txt /boot/firmware/cmdline-link.txt"] }
`), map[string]string{"base": disk.Path})
		if res.ExitCode == 0 {
			t.Fatalf("a symbolic link in the FAT built:\n%s", res.Output)
		}
		want := "writing /boot/firmware back to partition 1"
		if !strings.Contains(res.Output, want) || !strings.Contains(res.Output, "/cmdline-link.txt is a symbolic link: a FAT filesystem cannot hold one") {
			t.Errorf("the error does not say %q and name the link:\n%s", want, res.Output)
		}
		if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
			t.Errorf("output directory left after a failed build")
		}
		a.assertNoLeaks(t)
	})

	t.Run("failing-provisioner", func(t *testing.T) {
		a := newAcc(t)
		res := a.Build(t, template(``, `
  provisioner "shell" { inline = ["echo changed > /boot/firmware/cmdline.txt", "exit 3"] }
`), map[string]string{"base": disk.Path})
		if res.ExitCode == 0 {
			t.Fatalf("a failing provisioner built:\n%s", res.Output)
		}
		if strings.Contains(res.Output, "Wrote back") {
			t.Errorf("a failed build wrote the FAT back:\n%s", res.Output)
		}
		a.assertNoLeaks(t)
	})

	t.Run("sigkill-then-new-build", func(t *testing.T) {
		a := newAcc(t)
		killed := killMidBuild(t, a, template(``, `
  provisioner "shell" { inline = ["echo changed > /boot/firmware/cmdline.txt", "echo FACTORY-SLEEPING", "sleep 300"] }
`), map[string]string{"base": disk.Path, "out": "killed"})
		if !vfat && !strings.Contains(killed, "its files are staged in a tmpfs") {
			t.Fatalf("the killed build had not staged the FAT:\n%s", killed)
		}
		if leaks := a.before.LeftIn(a.OwnDirs()...); len(leaks) == 0 {
			t.Fatal("the killed build left nothing behind; the test cannot show the reaper works")
		}
		res := mustBuild(t, a, template(``, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": disk.Path})
		if !strings.Contains(res.Output, "Released what an earlier, killed build left behind") {
			t.Errorf("the new build did not report reaping the killed one:\n%s", res.Output)
		}
		if got, _ := fixture.FATFile(t, filepath.Join(a.out(), "t.raw"), fw, "/cmdline.txt"); got != fixture.FirmwareCmdline {
			t.Errorf("cmdline.txt after the new build = %q", got)
		}
		a.assertNoLeaks(t)
	})

	t.Run("placeholder-option", func(t *testing.T) {
		fixture.SkipUnlessStaged(t, "fat_mounts = \"placeholder\" (it governs a FAT the kernel cannot mount)")
		a := newAcc(t)
		res := mustBuild(t, a, template(`  fat_mounts = "placeholder"`, `
  provisioner "shell" { inline = [`+writeTry+`] }
`), map[string]string{"base": disk.Path})
		for _, want := range []string{"Skipped /boot/firmware", "writes below /boot/firmware will fail", "FW-WRITE-FAILED", "Read-only file system"} {
			if !strings.Contains(res.Output, want) {
				t.Errorf("the output does not say %q:\n%s", want, res.Output)
			}
		}
		if fixture.PartitionSHA256(t, filepath.Join(a.out(), "t.raw"), fw) != fixture.PartitionSHA256(t, disk.Path, fw) {
			t.Error("the firmware partition changed")
		}
		a.assertNoLeaks(t)
	})

	t.Run("corrupted-fat", func(t *testing.T) {
		fixture.SkipUnlessStaged(t, "mtools' refusal of a corrupted FAT")
		bad := fixture.FirmwareDisk(t, fixture.FirmwareDiskOptions{})
		f, err := os.OpenFile(bad.Path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		// The boot sector gone: blkid, mtools and the kernel see no FAT.
		// Keep the signature blkid needs to still call it vfat: zero only
		// the BPB's bytes-per-sector field (offset 11).
		if _, err := f.WriteAt([]byte{0, 0}, fw.Offset+11); err != nil {
			t.Fatal(err)
		}
		f.Close()
		a := newAcc(t)
		res := mustBuild(t, a, template(``, `
  provisioner "shell" { inline = [`+writeTry+`] }
`), map[string]string{"base": bad.Path})
		for _, want := range []string{"Skipped /boot/firmware", "mtools cannot read it either", "FW-WRITE-FAILED", "Read-only file system"} {
			if !strings.Contains(res.Output, want) {
				t.Errorf("the output does not say %q:\n%s", want, res.Output)
			}
		}
		a.assertNoLeaks(t)
	})

	if fixture.Sha256(t, disk.Path) != baseSum {
		t.Error("the base image changed")
	}
}
