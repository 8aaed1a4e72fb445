package bootloader

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// ESPLabel is the EFI system partition's FAT volume label.
const ESPLabel = "EFI"

// EFI says where the EFI system partition lies.
type EFI struct {
	Dir         string // GRUB's x86_64-efi directory; DefaultEFIDir if empty
	Start, Size int64  // the ESP's byte range on the disk
}

// RemovablePath is where UEFI firmware looks for a boot loader on a disk
// without boot entries in NVRAM (every fresh VM).
const RemovablePath = "/EFI/BOOT/BOOTX64.EFI"

// InstallEFI makes a FAT32 filesystem in the ESP's byte range, in user
// space, and puts a standalone GRUB at \EFI\BOOT\BOOTX64.EFI.
func InstallEFI(ctx context.Context, disk string, e EFI, r Root) error {
	dir := e.Dir
	if dir == "" {
		dir = DefaultEFIDir
	}
	img, err := mkimage(ctx, dir, "x86_64-efi", efiModules, r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fs, err := fat32.Create(file.New(f, false), fatSize(e.Size), e.Start, sector, ESPLabel, false)
	if err != nil {
		return fmt.Errorf("making the FAT32 EFI system partition: %w", err)
	}
	if err := fs.Mkdir("/EFI/BOOT"); err != nil {
		return fmt.Errorf("EFI system partition: mkdir /EFI/BOOT: %w", err)
	}
	out, err := fs.OpenFile(RemovablePath, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("EFI system partition: %s: %w", RemovablePath, err)
	}
	if _, err := out.Write(img); err != nil {
		out.Close()
		return fmt.Errorf("EFI system partition: writing %s: %w", RemovablePath, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("EFI system partition: closing %s: %w", RemovablePath, err)
	}
	if err := fixDotDot(f, e.Start, "EFI"); err != nil {
		return fmt.Errorf("EFI system partition: %w", err)
	}
	return f.Sync()
}

// fatSize is the largest size up to size for which go-diskfs v1.9.4 sizes
// the FAT right. It computes sectors per FAT as ceil((T-32)/130) (512-byte
// sectors and clusters, T sectors in all) where the FAT must also hold the
// two reserved entries, ceil((T-32+2)/130): the two differ when (T-32) mod
// 130 is 0 or 129, and then the last two clusters have no FAT entry
// (fsck.fat: "129024 clusters but only space for 129022 FAT entries"; a
// 64 MiB ESP is such a size). The filesystem then ends a few sectors
// before the partition does.
func fatSize(size int64) int64 {
	t := size / sector
	for t > 32 {
		if m := (t - 32) % 130; m != 0 && m != 129 {
			break
		}
		t--
	}
	return t * sector
}

// fixDotDot sets the ".." entry of the top-level directory name to cluster
// 0, as the FAT specification wants for a parent that is the root
// directory; go-diskfs v1.9.4 writes the root's cluster number there
// (fsck.fat: "Invalid '..' entry in the second slot").
func fixDotDot(f *os.File, start int64, name string) error {
	bs := make([]byte, sector)
	if _, err := f.ReadAt(bs, start); err != nil {
		return err
	}
	spc := int64(bs[13])
	reserved := int64(binary.LittleEndian.Uint16(bs[14:]))
	fats := int64(bs[16])
	perFAT := int64(binary.LittleEndian.Uint32(bs[36:]))
	rootCluster := int64(binary.LittleEndian.Uint32(bs[44:]))
	clusterAt := func(c int64) int64 { return start + (reserved+fats*perFAT+(c-2)*spc)*sector }

	root := make([]byte, spc*sector)
	if _, err := f.ReadAt(root, clusterAt(rootCluster)); err != nil {
		return err
	}
	want := fmt.Sprintf("%-11s", name)
	for i := 0; i+32 <= len(root); i += 32 {
		e := root[i : i+32]
		if e[0] == 0 {
			break
		}
		if string(e[:11]) != want || e[11]&0x10 == 0 {
			continue
		}
		dir := int64(binary.LittleEndian.Uint16(e[20:]))<<16 | int64(binary.LittleEndian.Uint16(e[26:]))
		dotdot := make([]byte, 32)
		at := clusterAt(dir) + 32
		if _, err := f.ReadAt(dotdot, at); err != nil {
			return err
		}
		if string(dotdot[:11]) != "..         " {
			return fmt.Errorf("/%s has no \"..\" entry in its second slot", name)
		}
		binary.LittleEndian.PutUint16(dotdot[20:], 0)
		binary.LittleEndian.PutUint16(dotdot[26:], 0)
		_, err := f.WriteAt(dotdot, at)
		return err
	}
	return fmt.Errorf("no directory /%s in the root directory", name)
}
