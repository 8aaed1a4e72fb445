package bootloader

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// ESPLabel is the EFI system partition's FAT volume label.
const ESPLabel = "EFI"

// EFI says where the EFI system partition lies and which GRUB goes in it.
type EFI struct {
	Platform    EFIPlatform // EFIx86_64 if zero
	Dir         string      // GRUB's modules for Platform; Platform.Dir if empty
	Start, Size int64       // the ESP's byte range on the disk
	// Repro, when not nil, gives the FAT its volume ID
	// ("fat/esp/volume-id") and the epoch as every entry's times; nil
	// keeps go-diskfs's (the clock's).
	Repro *repro.Source
}

// EFIPlatform is one UEFI architecture: GRUB's name for it, where its
// modules are, and the file name firmware boots from removable media.
type EFIPlatform struct {
	Format  string // grub-mkimage -O
	Dir     string // its modules on a Debian system
	Package string // the Debian package holding Dir
	Loader  string // the removable media boot path on the ESP
	modules []string
}

// The platforms. Removable media paths: UEFI specification 2.10, section
// 3.5.1.1 ("Removable Media Boot Behavior": BOOTx64.EFI, BOOTAA64.EFI).
// efi_uga (the UGA protocol) exists on x86 only.
var (
	EFIx86_64 = EFIPlatform{Format: "x86_64-efi", Dir: DefaultEFIDir, Package: "grub-efi-amd64-bin", Loader: RemovablePath,
		modules: append([]string{"fat", "efi_gop", "efi_uga"}, commonModules...)}
	EFIArm64 = EFIPlatform{Format: "arm64-efi", Dir: "/usr/lib/grub/arm64-efi", Package: "grub-efi-arm64-bin", Loader: "/EFI/BOOT/BOOTAA64.EFI",
		modules: append([]string{"fat", "efi_gop"}, commonModules...)}
)

// RemovablePath is where x86-64 UEFI firmware looks for a boot loader on a
// disk without boot entries in NVRAM (every fresh VM).
const RemovablePath = "/EFI/BOOT/BOOTX64.EFI"

// InstallEFI makes a FAT32 filesystem in the ESP's byte range, in user
// space, and puts a standalone GRUB for e.Platform at its removable media
// path (\EFI\BOOT\BOOTX64.EFI, \EFI\BOOT\BOOTAA64.EFI). grub-mkimage
// is the host's: it only assembles the modules of e.Dir, whatever their
// architecture.
func InstallEFI(ctx context.Context, disk string, e EFI, r Root) error {
	p := e.Platform
	if p.Format == "" {
		p = EFIx86_64
	}
	dir := e.Dir
	if dir == "" {
		dir = p.Dir
	}
	img, err := mkimage(ctx, dir, p.Format, p.Package, p.modules, r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fs, err := fat32.Create(file.New(f, false), fatSize(e.Size), e.Start, sector, ESPLabel, e.Repro.Enabled())
	if err != nil {
		return fmt.Errorf("making the FAT32 EFI system partition: %w", err)
	}
	if err := fs.Mkdir("/EFI/BOOT"); err != nil {
		return fmt.Errorf("EFI system partition: mkdir /EFI/BOOT: %w", err)
	}
	out, err := fs.OpenFile(p.Loader, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("EFI system partition: %s: %w", p.Loader, err)
	}
	if _, err := out.Write(img); err != nil {
		out.Close()
		return fmt.Errorf("EFI system partition: writing %s: %w", p.Loader, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("EFI system partition: closing %s: %w", p.Loader, err)
	}
	if err := fixDotDot(f, e.Start, "EFI"); err != nil {
		return fmt.Errorf("EFI system partition: %w", err)
	}
	if e.Repro.Enabled() {
		if err := stampFAT(f, e.Start, e.Repro.Uint32("fat/esp/volume-id"), e.Repro.Time()); err != nil {
			return fmt.Errorf("EFI system partition: %w", err)
		}
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
