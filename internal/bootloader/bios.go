package bootloader

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

const sector = 512

// Offsets in GRUB 2's boot.img (include/grub/i386/pc/boot.h) and in the
// first sector of core.img (diskboot.img's block list).
const (
	bootBPBStart     = 0x03  // BIOS parameter block, kept from the disk
	bootBPBEnd       = 0x5a  //
	bootKernelSector = 0x5c  // uint64: the LBA of core.img's first sector
	bootBootDrive    = 0x64  // 0xff: use the drive the BIOS booted from
	bootDriveCheck   = 0x66  // a 2-byte jump, nop'ed for hard disks
	bootNTMagic      = 0x1b8 // disk signature onwards: kept from the disk
	bootPartEnd      = 0x1fe //
	blocklistStart   = sector - 12
	kernelSegment    = 0x820 // where diskboot loads the rest of core.img
)

// BIOS says where the core image goes.
type BIOS struct {
	Dir string // GRUB's i386-pc directory; DefaultBIOSDir if empty
	// CoreStart is the byte offset of the core image: the BIOS boot
	// partition's start (GPT), or 512 (after the MBR, in the gap before the
	// first partition). CoreMax is the room there, in bytes.
	CoreStart, CoreMax int64
}

// InstallBIOS writes a GRUB core image at b.CoreStart of the raw disk and
// GRUB's boot.img into its MBR, keeping the partition table and disk
// signature. It is what grub-bios-setup does, for a file.
func InstallBIOS(ctx context.Context, disk string, b BIOS, r Root) error {
	dir := b.Dir
	if dir == "" {
		dir = DefaultBIOSDir
	}
	if b.CoreStart < sector || b.CoreStart%sector != 0 {
		return fmt.Errorf("GRUB core image offset %d is not a sector after the MBR", b.CoreStart)
	}
	core, err := mkimage(ctx, dir, "i386-pc", "grub-pc-bin", biosModules, r)
	if err != nil {
		return err
	}
	if int64(len(core)) > b.CoreMax {
		return fmt.Errorf("the GRUB core image (%d bytes) does not fit in the %d bytes before the first partition", len(core), b.CoreMax)
	}
	boot, err := os.ReadFile(filepath.Join(dir, "boot.img"))
	if err != nil {
		return fmt.Errorf("GRUB boot.img: %w", err)
	}
	if len(boot) != sector {
		return fmt.Errorf("GRUB boot.img is %d bytes, not %d", len(boot), sector)
	}
	if err := patchCore(core, uint64(b.CoreStart/sector)); err != nil {
		return err
	}

	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	mbr := make([]byte, sector)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("reading the MBR of %s: %w", disk, err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return fmt.Errorf("%s has no partition table to install GRUB around", disk)
	}
	patchBoot(boot, mbr, uint64(b.CoreStart/sector))
	if _, err := f.WriteAt(core, b.CoreStart); err != nil {
		return fmt.Errorf("writing the GRUB core image: %w", err)
	}
	if _, err := f.WriteAt(boot, 0); err != nil {
		return fmt.Errorf("writing the GRUB boot sector: %w", err)
	}
	return f.Sync()
}

// patchCore points the block list of core.img's first sector (diskboot)
// at the sectors following it: the core image lies in one contiguous run,
// so one entry covers it, and the entry below it stays the terminator.
func patchCore(core []byte, first uint64) error {
	if len(core) < 2*sector {
		return fmt.Errorf("the GRUB core image is only %d bytes", len(core))
	}
	rest := (len(core) - sector + sector - 1) / sector
	bl := core[blocklistStart:sector]
	if seg := binary.LittleEndian.Uint16(bl[10:12]); seg != kernelSegment {
		return fmt.Errorf("the GRUB core image's block list is not where GRUB 2 puts it (segment %#x)", seg)
	}
	if binary.LittleEndian.Uint16(core[blocklistStart-12+8:]) != 0 {
		return errors.New("the GRUB core image has a second block list entry; expected a terminator")
	}
	binary.LittleEndian.PutUint64(bl[0:8], first+1)
	binary.LittleEndian.PutUint16(bl[8:10], uint16(rest))
	return nil
}

// patchBoot fills boot.img with the disk's BPB area and partition table and
// the core image's location.
func patchBoot(boot, mbr []byte, coreSector uint64) {
	copy(boot[bootBPBStart:bootBPBEnd], mbr[bootBPBStart:bootBPBEnd])
	copy(boot[bootNTMagic:bootPartEnd], mbr[bootNTMagic:bootPartEnd])
	binary.LittleEndian.PutUint64(boot[bootKernelSector:], coreSector)
	boot[bootBootDrive] = 0xff
	// Some BIOSes pass a floppy's drive number for a hard disk; GRUB skips
	// its check for hard disks the same way.
	boot[bootDriveCheck], boot[bootDriveCheck+1] = 0x90, 0x90
	boot[510], boot[511] = 0x55, 0xaa
}
