package partition

import (
	"encoding/binary"
	"fmt"
	"os"
)

// Partition type codes named in messages. MBR type bytes and GPT type
// GUIDs as util-linux's libfdisk lists them (libfdisk/src/pt-mbr-partnames.h
// and pt-gpt-partnames.h).
var mbrTypeNames = map[byte]string{
	0x05: "Extended", 0x07: "HPFS/NTFS/exFAT", 0x0b: "W95 FAT32", 0x0c: "W95 FAT32 (LBA)",
	0x0e: "W95 FAT16 (LBA)", 0x0f: "W95 Ext'd (LBA)", 0x82: "Linux swap", 0x83: "Linux",
	0x85: "Linux extended", 0x8e: "Linux LVM", 0xee: "GPT", 0xef: "EFI (FAT-12/16/32)",
	0xfd: "Linux raid autodetect",
}

// GPTTypeSwap is the GPT type GUID of a Linux swap partition.
const GPTTypeSwap = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"

var gptTypeNames = map[string]string{
	"21686148-6449-6e6f-744e-656564454649": "BIOS boot",
	"c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
	"0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
	"4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
	"b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM-64)",
	"bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
	"e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
	"a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
	GPTTypeSwap:                            "Linux swap",
}

// TypeName is the partition type as fdisk names it ("Linux swap", "EFI
// System"), or its code when the name is not known.
func (p Partition) TypeName() string {
	if p.TypeGUID != "" {
		if n, ok := gptTypeNames[p.TypeGUID]; ok {
			return n
		}
		return "type " + p.TypeGUID
	}
	if n, ok := mbrTypeNames[p.TypeMBR]; ok {
		return n
	}
	return fmt.Sprintf("type 0x%02x", p.TypeMBR)
}

// IsSwap reports whether the partition's type says Linux swap.
func (p Partition) IsSwap() bool {
	return p.TypeGUID == GPTTypeSwap || p.TypeGUID == "" && p.TypeMBR == 0x82
}

// slot is one MBR entry or logical partition, for finding what ends last.
type slot struct {
	Partition
	extended bool // a container of logical partitions
	in       int  // for a logical partition: the number of its extended partition
}

func (s slot) describe() string {
	switch {
	case s.extended:
		return fmt.Sprintf("partition %d (%s, an extended partition)", s.Number, s.TypeName())
	case s.in > 0:
		return fmt.Sprintf("partition %d (%s, logical, in extended partition %d)", s.Number, s.TypeName(), s.in)
	}
	return fmt.Sprintf("partition %d (%s)", s.Number, s.TypeName())
}

// GrowBlockedError says why the partition that ends last on a disk cannot
// be grown, and what the user can do.
type GrowBlockedError struct {
	Blocker string // "partition 5 (Linux swap, logical, in extended partition 2)"
	After   int    // the partition it lies after (0: none)
	Why     string
	Swap    bool // the blocker is swap space
}

func (e *GrowBlockedError) Error() string {
	after := ""
	if e.After > 0 {
		after = fmt.Sprintf(" after partition %d", e.After)
	}
	remake := "make the base image with the partition to grow as a primary partition lying last"
	booted := "move the data off it, delete it with fdisk and its line in /etc/fstab, then growpart and resize the filesystem before it"
	if e.Swap {
		remake = "make the base image without it (a swap file in the root filesystem grows with it) or with it placed before the root partition"
		booted = "swapoff, delete it with fdisk and its line in /etc/fstab, then growpart and resize the root filesystem"
	}
	return fmt.Sprintf("%s lies%s at the end of the disk: only the partition that ends last can grow, and %s. "+
		"What you can do: leave disk_size unset (the image keeps its size); or %s; or grow on the booted system: %s",
		e.Blocker, after, e.Why, remake, booted)
}

// CheckGrow reads the table of the disk image at path and says, before
// anything is written, whether GrowLast can grow the partition that ends
// last: a swap partition, an extended partition or a logical partition
// there is a *GrowBlockedError naming it. A disk without a table is fine
// (its filesystem grows). Logical partitions are found by walking the
// chain of extended boot records (one EBR per logical partition, its
// second entry linking to the next, relative to the extended partition's
// start; the MBR layout as fdisk writes it).
func CheckGrow(path string) error {
	t, err := Read(path)
	if err != nil {
		return err
	}
	if t.Kind == None {
		return nil
	}
	var slots []slot
	if t.Kind == GPT {
		for _, p := range t.Partitions {
			slots = append(slots, slot{Partition: p})
		}
	} else if slots, err = mbrSlots(path); err != nil {
		return err
	}
	last := -1
	for i, s := range slots {
		if last < 0 || s.End() > slots[last].End() {
			last = i
		}
	}
	if last < 0 {
		return nil
	}
	s := slots[last]
	if s.extended {
		// Free space at the container's end: the logical partition that
		// ends last in it is what stands in the way.
		inner := -1
		for i, o := range slots {
			if o.in == s.Number && (inner < 0 || o.End() > slots[inner].End()) {
				inner = i
			}
		}
		if inner >= 0 {
			s = slots[inner]
		}
	}
	var why string
	switch {
	case s.extended:
		why = "an extended partition holds no filesystem (and here no logical partition)"
	case s.in > 0 && s.IsSwap():
		why = "a swap partition has no filesystem to grow, and a logical one sits inside an extended partition that would have to grow with it"
	case s.in > 0:
		why = "a logical partition sits inside an extended partition, which is not grown"
	case s.IsSwap():
		why = "a swap partition has no filesystem to grow"
	default:
		return nil
	}
	e := &GrowBlockedError{Blocker: s.describe(), Why: why, Swap: s.IsSwap()}
	var afterEnd int64
	for _, o := range slots {
		if !o.extended && o.in == 0 && !o.IsSwap() && o.End() <= s.Start && o.End() > afterEnd {
			e.After, afterEnd = o.Number, o.End()
		}
	}
	return e
}

// mbrSlots lists the MBR's primary entries (extended ones marked) and the
// logical partitions of each extended partition, numbered from 5 as Linux
// numbers them.
func mbrSlots(path string) ([]slot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	defer f.Close()
	b := make([]byte, SectorSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("read MBR of %s: %w", path, err)
	}
	var slots []slot
	next := 5
	for i := 0; i < 4; i++ {
		e := b[446+16*i : 446+16*(i+1)]
		start := int64(binary.LittleEndian.Uint32(e[8:12]))
		size := int64(binary.LittleEndian.Uint32(e[12:16]))
		if e[4] == 0 || size == 0 {
			continue
		}
		s := slot{Partition: Partition{Number: i + 1, Start: start * SectorSize, Size: size * SectorSize, TypeMBR: e[4]}, extended: isExtended(e[4])}
		slots = append(slots, s)
		if !s.extended {
			continue
		}
		logical, err := readEBRChain(f, path, start, size, i+1, &next)
		if err != nil {
			return nil, err
		}
		slots = append(slots, logical...)
	}
	return slots, nil
}

// readEBRChain follows the EBRs of the extended partition number ext
// (sectors extStart..extStart+extSize).
func readEBRChain(f *os.File, path string, extStart, extSize int64, ext int, next *int) ([]slot, error) {
	var out []slot
	b := make([]byte, SectorSize)
	ebr := extStart
	for range 128 { // a loop in a damaged chain must end
		if _, err := f.ReadAt(b, ebr*SectorSize); err != nil {
			return nil, fmt.Errorf("read extended boot record of partition %d of %s at sector %d: %w", ext, path, ebr, err)
		}
		if b[510] != 0x55 || b[511] != 0xaa {
			return out, nil
		}
		e := b[446:462]
		if size := int64(binary.LittleEndian.Uint32(e[12:16])); e[4] != 0 && size > 0 {
			start := ebr + int64(binary.LittleEndian.Uint32(e[8:12]))
			out = append(out, slot{Partition: Partition{Number: *next, Start: start * SectorSize, Size: size * SectorSize, TypeMBR: e[4]}, in: ext})
			*next++
		}
		link := b[462:478]
		rel := int64(binary.LittleEndian.Uint32(link[8:12]))
		if link[4] == 0 || rel == 0 || rel >= extSize {
			return out, nil
		}
		ebr = extStart + rel
	}
	return out, nil
}
