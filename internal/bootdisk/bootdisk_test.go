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
