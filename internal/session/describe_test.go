package session

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestNoRootDescribesPartitions: on a disk of swap, an ESP, an LVM PV and
// a btrfs without /etc/fstab, the "no root" error says what each
// partition holds and why it cannot be the root; the btrfs filesystem
// could still be one, so root_partition is suggested.
// The ESP's line says "this kernel cannot mount vfat either" as a kernel
// without vfat describes it, and not as one with vfat (loaded or loadable)
// does: both views are fed to it, so the message is checked on any host.
func TestNoRootDescribesPartitions(t *testing.T) {
	d := fixture.NoRootMixed(t)
	e := newEnv(t, d.Path)
	s := e.attach(t)
	for _, vfat := range []bool{false, true} {
		t.Run(map[bool]string{false: "kernel without vfat", true: "kernel with vfat"}[vfat], func(t *testing.T) {
			restore := kernelMayMount
			kernelMayMount = func(fstype string) (bool, bool) { return fstype != "vfat" || vfat, true }
			t.Cleanup(func() { kernelMayMount = restore })
			describeNoRoot(t, s, vfat)
		})
	}
}

func describeNoRoot(t *testing.T, s *Session, vfat bool) {
	_, err := s.FindRoot(context.Background())
	if err == nil {
		t.Fatal("FindRoot found a root")
	}
	msg := err.Error()
	t.Log(msg)
	wants := []string{
		"no root filesystem found",
		`partition 1 (/dev/loop`, `swap labelled "swap"): Linux swap, 8 MiB: swap space; not usable as the root: swap holds no files`,
		`partition 2 (/dev/loop`, `vfat labelled "EFI"): EFI System, 32 MiB: a FAT filesystem, the EFI system partition; not usable as the root: FAT cannot hold a Linux root`,
		`partition 3 (/dev/loop`, `LVM2_member): Linux LVM, 8 MiB: an LVM physical volume; not usable as the root: its LVM metadata cannot be read`,
		`partition 4 (/dev/loop`, `btrfs labelled "data"): Linux filesystem, 142 MiB: a btrfs filesystem; not usable as the root: no /etc/fstab at its top level`,
		"set root_partition to the partition holding /",
	}
	const either = "this kernel cannot mount vfat either (its mount point in the image's fstab, such as /boot/efi, is skipped)"
	if !vfat {
		wants = append(wants, either)
	} else if strings.Contains(msg, "cannot mount vfat") {
		t.Errorf("a kernel with vfat is said not to mount it")
	}
	for _, w := range wants {
		if !strings.Contains(msg, w) {
			t.Errorf("the message does not say %q", w)
		}
	}
	if n := strings.Count(msg, "\n"); n != 4 {
		t.Errorf("%d lines, want the summary and one per partition", n+1)
	}
}

// TestNoUsableRootSaysSo: without any filesystem a root could be on, the
// message says so instead of suggesting root_partition.
func TestNoUsableRootSaysSo(t *testing.T) {
	d := fixture.NoRootMixed(t)
	// Wipe the btrfs superblock (64 KiB into the partition).
	btrfs := d.Partitions[3]
	f, err := os.OpenFile(d.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), btrfs.Offset+64<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s := newEnv(t, d.Path).attach(t)
	_, err = s.FindRoot(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no partition holds a filesystem the builder can use as the root") ||
		strings.Contains(err.Error(), "set root_partition") ||
		!strings.Contains(err.Error(), "partition 4 (/dev/loop") || !strings.Contains(err.Error(), "no filesystem blkid recognizes") {
		t.Errorf("FindRoot error = %v", err)
	}
}
