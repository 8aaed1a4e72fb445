package bootdisk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// TestMake makes GPT and MBR disks from a small tree and checks them with
// other tools than ours: sfdisk/sgdisk for the table, blkid for the root,
// fsck.fat for the EFI system partition and its BOOTX64.EFI, and the MBR's
// pointer to GRUB's core image. (The acceptance tests boot such disks.)
func TestMake(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mkfs -d of a root-owned tree)")
	}
	tree := t.TempDir()
	fixture.BusyboxTree(t, tree)
	for _, table := range []string{partition.GPT, partition.MBR} {
		t.Run(table, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.raw")
			res, err := Make(context.Background(), Options{Disk: disk, Tree: tree, Table: table, FSType: rootfs.Ext4, Free: 32 << 20})
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("sfdisk", "--json", disk).CombinedOutput()
			if err != nil {
				t.Fatalf("sfdisk: %v %s", err, out)
			}
			wantLabel := map[string]string{partition.GPT: `"label": "gpt"`, partition.MBR: `"label": "dos"`}[table]
			if !strings.Contains(string(out), wantLabel) {
				t.Errorf("sfdisk: want %s:\n%s", wantLabel, out)
			}
			if table == partition.GPT {
				if v, err := exec.Command("sgdisk", "-v", disk).CombinedOutput(); err != nil || !strings.Contains(string(v), "No problems found") {
					t.Errorf("sgdisk -v: %v %s", err, v)
				}
			}
			blk, _ := exec.Command("blkid", "-p", "-O", fmt.Sprint(res.Root.Start), "-o", "export", disk).CombinedOutput()
			if !strings.Contains(string(blk), "LABEL=cloudimg-rootfs") || !strings.Contains(string(blk), "UUID="+res.RootUUID) {
				t.Errorf("root: %s", blk)
			}
			fixture.E2fsck(t, disk, res.Root.Start)
			tbl, err := partition.Read(disk)
			if err != nil {
				t.Fatal(err)
			}
			esp := tbl.Partitions[0]
			core := int64(1)
			if table == partition.GPT {
				esp = tbl.Partitions[1]
				core = tbl.Partitions[0].Start / 512
			}
			// The ESP, cut out of the disk, checked and listed by dosfstools.
			espFile := filepath.Join(t.TempDir(), "esp.img")
			if b, err := exec.Command("dd", "if="+disk, "of="+espFile, "bs=1M", fmt.Sprintf("skip=%d", esp.Start>>20), fmt.Sprintf("count=%d", esp.Size>>20), "status=none").CombinedOutput(); err != nil {
				t.Fatalf("dd: %v %s", err, b)
			}
			fsck, err := exec.Command("fsck.fat", "-n", "-v", "-l", espFile).CombinedOutput()
			if !strings.Contains(strings.ToUpper(string(fsck)), "/EFI/BOOT/BOOTX64.EFI") || !strings.Contains(string(fsck), "32 bit entries") {
				t.Errorf("fsck.fat of the ESP: %v\n%s", err, fsck)
			}
			// The one thing fsck.fat may report: go-diskfs leaves the FSInfo
			// free cluster count unset (0xffffffff: "unknown", as the FAT
			// specification allows).
			if err != nil {
				rest := strings.ReplaceAll(string(fsck), "Free cluster summary uninitialized", "")
				if strings.Contains(rest, "Invalid") || strings.Contains(rest, "only space") || strings.Contains(rest, "Fixing") || !strings.Contains(string(fsck), "Free cluster summary uninitialized") {
					t.Errorf("fsck.fat -n of the ESP: %v\n%s", err, fsck)
				}
			}
			mbr := make([]byte, 512)
			f, _ := os.Open(disk)
			f.ReadAt(mbr, 0)
			first := make([]byte, 512)
			f.ReadAt(first, core*512)
			f.Close()
			if got := binary.LittleEndian.Uint64(mbr[0x5c:]); got != uint64(core) {
				t.Errorf("boot.img points at sector %d, want %d", got, core)
			}
			if got := binary.LittleEndian.Uint64(first[500:]); got != uint64(core)+1 {
				t.Errorf("core.img's block list starts at %d, want %d", got, core+1)
			}
		})
	}
}

func TestMakeTooSmall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	tree := t.TempDir()
	fixture.BusyboxTree(t, tree)
	os.WriteFile(filepath.Join(tree, "blob"), make([]byte, 100<<20), 0o644)
	disk := filepath.Join(t.TempDir(), "disk.raw")
	_, err := Make(context.Background(), Options{Disk: disk, Tree: tree, Table: partition.GPT, FSType: rootfs.Ext4, Size: 80 << 20})
	if !errors.Is(err, ErrTooSmall) {
		t.Fatalf("Make: %v, want ErrTooSmall", err)
	}
	if _, err := os.Stat(disk); err == nil {
		t.Errorf("a disk was written before the size check")
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		table, arch string
		ok          bool
	}{
		{partition.GPT, "", true}, {partition.MBR, "amd64", true}, {partition.MBR, "i386", true},
		{partition.GPT, Arm64, true}, {partition.MBR, Arm64, false}, {partition.GPT, "armhf", false}, {partition.GPT, "riscv64", false},
	} {
		err := Check(tc.table, tc.arch)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrArch)) {
			t.Errorf("Check(%s, %s) = %v", tc.table, tc.arch, err)
		}
	}
	if err := Check(partition.MBR, Arm64); err == nil || !strings.Contains(err.Error(), `use partition_table = "gpt"`) {
		t.Errorf("MBR for arm64: %v", err)
	}
}

// arm64GRUB is the GRUB arm64-efi modules directory of the arm64 tree the
// bootstrap tests cache (grub-efi-arm64-bin cannot be installed on an
// amd64 host); the test skips where no such tree has been made yet.
func arm64GRUB(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob("/var/cache/imagefactory/debootstrap-bookworm-minbase-arm64-*/usr/lib/grub/arm64-efi")
	if len(m) == 0 {
		t.Skip("no cached arm64 tree with GRUB's arm64-efi modules (TestTreeDebootstrapArm64 makes it)")
	}
	return m[0]
}

// TestMakeArm64 makes an arm64 disk: GPT with the ESP first and the root,
// no BIOS boot partition, GRUB arm64-efi at \EFI\BOOT\BOOTAA64.EFI made by
// the host's grub-mkimage from the tree's modules (checked with sgdisk,
// fsck.fat and mtools, and its PE header's machine); then the errors: a
// tree without the modules, one whose module directory is a symlink out
// of the tree (the copy stays inside it), and an MBR.
func TestMakeArm64(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mkfs -d of a root-owned tree)")
	}
	mods := arm64GRUB(t)
	tree := t.TempDir()
	fixture.BusyboxTree(t, tree)
	if out, err := exec.Command("cp", "-a", mods, filepath.Join(tree, "usr/lib/grub/")).CombinedOutput(); err != nil {
		os.MkdirAll(filepath.Join(tree, "usr/lib/grub"), 0o755)
		if out, err = exec.Command("cp", "-a", mods, filepath.Join(tree, "usr/lib/grub/")).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	disk := filepath.Join(t.TempDir(), "disk.raw")
	res, err := Make(context.Background(), Options{Disk: disk, Tree: tree, Table: partition.GPT, Arch: Arm64, FSType: rootfs.Ext4, Free: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("sgdisk", "-p", disk).CombinedOutput()
	if v, err := exec.Command("sgdisk", "-v", disk).CombinedOutput(); err != nil || !strings.Contains(string(v), "No problems found") {
		t.Errorf("sgdisk -v: %v %s", err, v)
	}
	tbl, err := partition.Read(disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(tbl.Partitions) != 2 || !strings.Contains(string(out), "EF00") || strings.Contains(string(out), "EF02") {
		t.Fatalf("want an ESP and the root, no BIOS boot partition:\n%s", out)
	}
	if res.Root.Start != tbl.Partitions[1].Start {
		t.Errorf("root at %d, partition 2 at %d", res.Root.Start, tbl.Partitions[1].Start)
	}
	esp := tbl.Partitions[0]
	espFile := filepath.Join(t.TempDir(), "esp.img")
	if b, err := exec.Command("dd", "if="+disk, "of="+espFile, "bs=1M", fmt.Sprintf("skip=%d", esp.Start>>20), fmt.Sprintf("count=%d", esp.Size>>20), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, b)
	}
	fsck, _ := exec.Command("fsck.fat", "-n", "-v", "-l", espFile).CombinedOutput()
	if !strings.Contains(strings.ToUpper(string(fsck)), "/EFI/BOOT/BOOTAA64.EFI") || strings.Contains(strings.ToUpper(string(fsck)), "BOOTX64") {
		t.Errorf("fsck.fat of the ESP:\n%s", fsck)
	}
	efi := filepath.Join(t.TempDir(), "BOOTAA64.EFI")
	if b, err := exec.Command("mcopy", "-i", espFile, "::/EFI/BOOT/BOOTAA64.EFI", efi).CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v %s", err, b)
	}
	pe, _ := os.ReadFile(efi)
	// PE/COFF: the header's offset at 0x3c, "PE\0\0", then the machine
	// (IMAGE_FILE_MACHINE_ARM64 = 0xaa64).
	if len(pe) < 0x40 {
		t.Fatalf("BOOTAA64.EFI is %d bytes", len(pe))
	}
	off := binary.LittleEndian.Uint32(pe[0x3c:])
	if int(off)+6 > len(pe) || string(pe[off:off+4]) != "PE\x00\x00" || binary.LittleEndian.Uint16(pe[off+4:]) != 0xaa64 {
		t.Errorf("BOOTAA64.EFI is not an arm64 PE image")
	}
	fixture.E2fsck(t, disk, res.Root.Start)

	t.Run("errors", func(t *testing.T) {
		bare := t.TempDir()
		fixture.BusyboxTree(t, bare)
		_, err := Make(context.Background(), Options{Disk: filepath.Join(t.TempDir(), "d.raw"), Tree: bare, Table: partition.GPT, Arch: Arm64, FSType: rootfs.Ext4})
		if err == nil || !strings.Contains(err.Error(), "install grub-efi-arm64-bin in it") {
			t.Errorf("a tree without GRUB's modules: %v", err)
		}
		// The modules as a link to the host's x86 ones: resolved inside the
		// tree, where there are none.
		os.MkdirAll(filepath.Join(bare, "usr/lib/grub"), 0o755)
		os.Symlink("/usr/lib/grub/x86_64-efi", filepath.Join(bare, "usr/lib/grub/arm64-efi"))
		_, err = Make(context.Background(), Options{Disk: filepath.Join(t.TempDir(), "d.raw"), Tree: bare, Table: partition.GPT, Arch: Arm64, FSType: rootfs.Ext4})
		if err == nil || !strings.Contains(err.Error(), "has no GRUB arm64-efi modules") {
			t.Errorf("modules linked out of the tree: %v", err)
		}
		d := filepath.Join(t.TempDir(), "d.raw")
		if _, err := Make(context.Background(), Options{Disk: d, Tree: tree, Table: partition.MBR, Arch: Arm64, FSType: rootfs.Ext4}); !errors.Is(err, ErrArch) {
			t.Errorf("MBR for arm64: %v", err)
		}
		if _, err := os.Stat(d); err == nil {
			t.Errorf("a disk was written for a refused layout")
		}
	})
}
