package session

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestFATStaged: on a Raspberry Pi-style disk, FATStaged gives the firmware
// FAT's files at /boot/firmware with the modes of the fstab's umask=, a
// change reaches the partition and fsck.fat finds it clean, and Close
// leaves no tmpfs, loop device or journal entry (the env's leak check).
// On a kernel without vfat, that is a tmpfs holding the files, and
// WriteBackFAT writes the change back once (the second call has nothing to
// do); on a kernel with vfat, the FAT is mounted and WriteBackFAT has
// nothing to do. FATPlaceholder keeps the read-only placeholder (a kernel
// without vfat only).
func TestFATStaged(t *testing.T) {
	vfat := fixture.KernelMountsVFAT(t)
	for _, mode := range []FATMode{FATStaged, FATPlaceholder} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == FATPlaceholder {
				fixture.SkipUnlessStaged(t, "the placeholder of fat_mounts = placeholder")
			}
			d := fixture.FirmwareDisk(t, fixture.FirmwareDiskOptions{FstabOptions: "umask=0027"})
			fw, _ := d.Find("/boot/firmware")
			e := newEnv(t, d.Path)
			e.opts.FAT = mode
			s := e.mountRoot(t)
			mounted, skipped, err := s.MountFstab()
			if err != nil {
				t.Fatal(err)
			}
			cmdline := filepath.Join(e.opts.MountPath, "boot/firmware/cmdline.txt")
			if mode == FATPlaceholder {
				if len(skipped) != 1 || !skipped[0].Placeholder || len(mounted) != 0 {
					t.Fatalf("mounted %q, skipped %v: want /boot/firmware skipped with a placeholder", mounted, skipped)
				}
				if err := os.WriteFile(cmdline, []byte("x"), 0o644); err == nil {
					t.Error("a write below the placeholder succeeded")
				}
				return
			}
			if len(mounted) != 1 || !strings.HasPrefix(mounted[0], "/boot/firmware (partition 1") || len(skipped) != 0 {
				t.Fatalf("mounted %q, skipped %v: want /boot/firmware mounted or staged", mounted, skipped)
			}
			if staged := strings.Contains(mounted[0], "staged in a tmpfs"); staged == vfat {
				t.Errorf("mounted %q: staged is %v on a kernel where mount(2) of vfat works: %v", mounted[0], staged, vfat)
			} else if vfat {
				// internal/vfatguest looks for this line.
				t.Logf("the kernel mounted the FAT: %s", mounted[0])
			}
			b, err := os.ReadFile(cmdline)
			if err != nil || string(b) != fixture.FirmwareCmdline {
				t.Fatalf("cmdline.txt = %q, %v", b, err)
			}
			for _, p := range []string{cmdline, filepath.Dir(cmdline)} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o750 {
					t.Errorf("%s has mode %v; want 0750 from umask=0027", p, fi.Mode().Perm())
				}
			}
			if err := os.WriteFile(cmdline, []byte("changed\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			lines, err := s.WriteBackFAT(context.Background())
			if vfat {
				if err != nil || len(lines) != 0 {
					t.Fatalf("WriteBackFAT of a mounted FAT = %q, %v; want nothing to do", lines, err)
				}
			} else {
				if err != nil || len(lines) != 1 || !strings.Contains(lines[0], "1 file(s) written") {
					t.Fatalf("WriteBackFAT = %q, %v", lines, err)
				}
				if lines, err := s.WriteBackFAT(context.Background()); err != nil || len(lines) != 0 {
					t.Errorf("a second WriteBackFAT = %q, %v; want nothing to do", lines, err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got, _ := fixture.FATFile(t, d.Path, fw, "/cmdline.txt"); got != "changed\n" {
				t.Errorf("cmdline.txt on the disk = %q", got)
			}
			fixture.FsckPartition(t, d.Path, fw)
		})
	}
}

// TestFATStagedMovedAway: a /boot renamed and replaced by a symlink to a
// host directory (a hostile provisioner) does not lead WriteBackFAT to the
// host: it reaches the mount it made through the image root, or says it is
// gone, and writes nothing.
func TestFATStagedMovedAway(t *testing.T) {
	fixture.SkipUnlessStaged(t, "the write-back through a /boot replaced by a symlink")
	d := fixture.FirmwareDisk(t, fixture.FirmwareDiskOptions{})
	fw, _ := d.Find("/boot/firmware")
	e := newEnv(t, d.Path)
	e.opts.FAT = FATStaged
	s := e.mountRoot(t)
	if _, _, err := s.MountFstab(); err != nil {
		t.Fatal(err)
	}
	root := e.opts.MountPath
	if err := os.WriteFile(filepath.Join(root, "boot/firmware/new.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "boot"), filepath.Join(root, "boot.moved")); err != nil {
		t.Fatal(err)
	}
	// A decoy on the host: an empty "firmware" directory. Followed, it
	// would make the write-back delete every file of the FAT.
	decoy := t.TempDir()
	if err := os.Mkdir(filepath.Join(decoy, "firmware"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(decoy, filepath.Join(root, "boot")); err != nil {
		t.Fatal(err)
	}
	lines, err := s.WriteBackFAT(context.Background())
	if err == nil || !strings.Contains(err.Error(), "writing /boot/firmware back") {
		t.Errorf("WriteBackFAT = %q, %v; want an error naming /boot/firmware", lines, err)
	}
	// Put /boot back so that Close can unmount through it.
	os.Remove(filepath.Join(root, "boot"))
	if err := os.Rename(filepath.Join(root, "boot.moved"), filepath.Join(root, "boot")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := fixture.FATFile(t, d.Path, fw, "/new.txt"); ok {
		t.Error("new.txt was written although the mount was moved")
	}
	if got, _ := fixture.FATFile(t, d.Path, fw, "/cmdline.txt"); got != fixture.FirmwareCmdline {
		t.Errorf("cmdline.txt on the disk = %q", got)
	}
}
