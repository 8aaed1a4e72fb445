// Package partition reads, grows and creates the partition table of a disk
// image file in user space (go-diskfs plus a few header fields written by
// hand), because the kernel here parses no partition tables: each partition
// is later attached as a loop device with an offset and a size limit.
//
// Sectors are always 512 bytes: a file has no sector size of its own and
// go-diskfs would otherwise guess; images with 4096-byte-sector GPTs are
// refused with a clear error.
package partition

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
)

// SectorSize is the logical sector size used for every image.
const SectorSize = 512

// Table kinds.
const (
	MBR  = "mbr"
	GPT  = "gpt"
	None = "none" // no partition table: the whole disk is one filesystem
)

// Table is a disk's partition table.
type Table struct {
	Kind       string // "mbr", "gpt" or "none"
	SectorSize int64
	DiskSize   int64  // bytes
	DiskID     string // GPT disk GUID or MBR disk signature (8 hex digits), lower case as blkid shows it
	Partitions []Partition
}

// Partition is one partition, in bytes from the start of the disk.
type Partition struct {
	Number   int // as Linux numbers it: GPT entry slot or MBR primary slot, from 1
	Start    int64
	Size     int64
	TypeGUID string // GPT partition type GUID, lower case
	TypeMBR  byte   // MBR partition type
	UUID     string // GPT partition GUID, or for MBR the PARTUUID "<signature>-<NN>"
	Name     string // GPT partition name
	Bootable bool   // MBR active flag or GPT legacy-BIOS-bootable attribute
}

// End is the byte offset just past the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// ByNumber returns the partition with the given number.
func (t *Table) ByNumber(n int) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.Number == n {
			return p, true
		}
	}
	return Partition{}, false
}

// MBR partition types that are containers for logical partitions.
func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// Read reads the partition table of a disk image file (or block device).
// GPT wins over the protective MBR that accompanies it. Only primary MBR
// partitions are returned: logical partitions inside an extended container
// are not supported (cloud images do not use them) and the container itself
// is skipped. A disk with neither table is Kind "none".
func Read(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read partition table: %w", err)
	}
	defer f.Close()
	return readFile(f, path)
}

func readFile(f *os.File, path string) (*Table, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("read partition table of %s: size: %w", path, err)
	}
	t := &Table{Kind: None, SectorSize: SectorSize, DiskSize: size}
	if size < 2*SectorSize {
		return t, nil
	}
	head := make([]byte, 2*SectorSize)
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("read partition table of %s: %w", path, err)
	}
	hasMBRSig := head[510] == 0x55 && head[511] == 0xaa
	hasGPTSig := string(head[512:520]) == gptSignature
	protective := false
	if hasMBRSig {
		for i := 0; i < 4; i++ {
			if head[446+16*i+4] == 0xee {
				protective = true
			}
		}
	}

	if !hasGPTSig && size >= 4096+8 {
		sig := make([]byte, 8)
		if _, err := f.ReadAt(sig, 4096); err == nil && string(sig) == gptSignature {
			return nil, fmt.Errorf("%s has a GPT for 4096-byte sectors; only 512-byte sectors are supported", path)
		}
	}

	switch {
	case hasGPTSig:
		return readGPT(f, path, t)
	case protective:
		return nil, fmt.Errorf("%s has a protective MBR but no GPT header at sector 1: the GPT is damaged (sgdisk -v %s tells more)", path, path)
	case hasMBRSig:
		return readMBR(f, path, t, head[:SectorSize])
	}
	return t, nil
}

func readGPT(f *os.File, path string, t *Table) (*Table, error) {
	// Validate the primary header ourselves: go-diskfs silently falls back
	// to the backup when the primary is damaged, and we want to say so.
	h, err := readGPTHeader(f, 1)
	if err != nil {
		return nil, fmt.Errorf("GPT of %s: %w", path, err)
	}
	if _, err := h.readEntries(f); err != nil {
		return nil, fmt.Errorf("GPT of %s: %w", path, err)
	}
	gt, err := gpt.Read(f, SectorSize, SectorSize)
	if err != nil {
		return nil, fmt.Errorf("GPT of %s: %w", path, err)
	}
	if gt.RecoveredFromBackup {
		return nil, fmt.Errorf("GPT of %s: the primary GPT is damaged", path)
	}
	t.Kind = GPT
	t.DiskID = strings.ToLower(gt.GUID)
	for _, p := range gt.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		if p.End < p.Start {
			return nil, fmt.Errorf("partition %d of %s ends (sector %d) before it starts (sector %d)", p.Index, path, p.End, p.Start)
		}
		t.Partitions = append(t.Partitions, Partition{
			Number:   p.Index,
			Start:    int64(p.Start) * SectorSize,
			Size:     int64(p.End-p.Start+1) * SectorSize,
			TypeGUID: strings.ToLower(string(p.Type)),
			UUID:     strings.ToLower(p.GUID),
			Name:     p.Name,
			Bootable: p.Attributes&(1<<2) != 0,
		})
	}
	if err := t.validate(path); err != nil {
		return nil, err
	}
	for _, p := range t.Partitions {
		s, e := uint64(p.Start/SectorSize), uint64(p.End()/SectorSize-1)
		if s < h.firstUsable || e > h.lastUsable {
			return nil, fmt.Errorf("partition %d of %s (sectors %d-%d) lies outside the GPT's usable sectors %d-%d",
				p.Number, path, s, e, h.firstUsable, h.lastUsable)
		}
	}
	return t, nil
}

func readMBR(f *os.File, path string, t *Table, sector0 []byte) (*Table, error) {
	mt, err := mbr.Read(f, SectorSize, SectorSize)
	if err != nil {
		// A FAT or NTFS boot sector also ends in 55 aa: a bare filesystem.
		if looksLikeVBR(sector0) {
			return t, nil
		}
		return nil, fmt.Errorf("MBR of %s: %w", path, err)
	}
	sig := binary.LittleEndian.Uint32(sector0[440:444])
	t.Kind = MBR
	t.DiskID = fmt.Sprintf("%08x", sig)
	for _, p := range mt.Partitions {
		if p.Type == mbr.Empty || p.Size == 0 || isExtended(byte(p.Type)) {
			continue
		}
		if p.Start == 0 {
			return nil, fmt.Errorf("partition %d of %s starts at sector 0, over the MBR itself", p.Index, path)
		}
		t.Partitions = append(t.Partitions, Partition{
			Number:   p.Index,
			Start:    int64(p.Start) * SectorSize,
			Size:     int64(p.Size) * SectorSize,
			TypeMBR:  byte(p.Type),
			UUID:     fmt.Sprintf("%08x-%02x", sig, p.Index),
			Bootable: p.Bootable,
		})
	}
	if len(t.Partitions) == 0 && looksLikeVBR(sector0) {
		return &Table{Kind: None, SectorSize: SectorSize, DiskSize: t.DiskSize}, nil
	}
	if err := t.validate(path); err != nil {
		return nil, err
	}
	return t, nil
}

func looksLikeVBR(b []byte) bool {
	return bytes.HasPrefix(b[54:], []byte("FAT")) || bytes.HasPrefix(b[82:], []byte("FAT32")) ||
		bytes.HasPrefix(b[3:], []byte("NTFS    ")) || bytes.HasPrefix(b[3:], []byte("EXFAT   "))
}

// validate rejects partitions past the end of the disk and overlaps.
func (t *Table) validate(path string) error {
	parts := append([]Partition(nil), t.Partitions...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Start < parts[j].Start })
	for i, p := range parts {
		if p.Start >= t.DiskSize {
			return fmt.Errorf("partition %d of %s starts at byte %d, past the end of the disk (%d bytes)", p.Number, path, p.Start, t.DiskSize)
		}
		if p.End() > t.DiskSize {
			return fmt.Errorf("partition %d of %s ends at byte %d, past the end of the disk (%d bytes)", p.Number, path, p.End(), t.DiskSize)
		}
		if i > 0 && p.Start < parts[i-1].End() {
			q := parts[i-1]
			return fmt.Errorf("partitions %d and %d of %s overlap: %d starts at byte %d, %d ends at byte %d",
				q.Number, p.Number, path, p.Number, p.Start, q.Number, q.End())
		}
	}
	sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Number < t.Partitions[j].Number })
	return nil
}

// ---- GPT header, read and written by hand for validation and growing ----

const gptSignature = "EFI PART"

type gptHeader struct {
	raw          []byte // the whole sector
	size         uint32 // header size (92)
	myLBA        uint64
	alternateLBA uint64
	firstUsable  uint64
	lastUsable   uint64
	entriesLBA   uint64
	entryCount   uint32
	entrySize    uint32
	entriesCRC   uint32
}

func readGPTHeader(f io.ReaderAt, lba uint64) (*gptHeader, error) {
	b := make([]byte, SectorSize)
	if _, err := f.ReadAt(b, int64(lba)*SectorSize); err != nil {
		return nil, fmt.Errorf("read GPT header at sector %d: %w", lba, err)
	}
	if string(b[0:8]) != gptSignature {
		return nil, fmt.Errorf("no GPT header at sector %d", lba)
	}
	h := &gptHeader{
		raw:          b,
		size:         binary.LittleEndian.Uint32(b[12:16]),
		myLBA:        binary.LittleEndian.Uint64(b[24:32]),
		alternateLBA: binary.LittleEndian.Uint64(b[32:40]),
		firstUsable:  binary.LittleEndian.Uint64(b[40:48]),
		lastUsable:   binary.LittleEndian.Uint64(b[48:56]),
		entriesLBA:   binary.LittleEndian.Uint64(b[72:80]),
		entryCount:   binary.LittleEndian.Uint32(b[80:84]),
		entrySize:    binary.LittleEndian.Uint32(b[84:88]),
		entriesCRC:   binary.LittleEndian.Uint32(b[88:92]),
	}
	if h.size < 92 || h.size > SectorSize {
		return nil, fmt.Errorf("GPT header at sector %d has an invalid size %d", lba, h.size)
	}
	stored := binary.LittleEndian.Uint32(b[16:20])
	if got := h.crc(); got != stored {
		return nil, fmt.Errorf("GPT header at sector %d has a bad CRC (stored %08x, computed %08x): the table is damaged", lba, stored, got)
	}
	if h.myLBA != lba {
		return nil, fmt.Errorf("GPT header at sector %d says it is at sector %d", lba, h.myLBA)
	}
	if h.entrySize < 128 || h.entrySize%8 != 0 || h.entryCount == 0 || h.entryCount > 1024 {
		return nil, fmt.Errorf("GPT header at sector %d has an unsupported entry array (%d entries of %d bytes)", lba, h.entryCount, h.entrySize)
	}
	return h, nil
}

// crc computes the header CRC with its own CRC field taken as zero.
func (h *gptHeader) crc() uint32 {
	b := append([]byte(nil), h.raw[:h.size]...)
	copy(b[16:20], []byte{0, 0, 0, 0})
	return crc32.ChecksumIEEE(b)
}

func (h *gptHeader) entriesBytes() int64 { return int64(h.entryCount) * int64(h.entrySize) }

func (h *gptHeader) entriesSectors() uint64 {
	return uint64((h.entriesBytes() + SectorSize - 1) / SectorSize)
}

func (h *gptHeader) readEntries(f io.ReaderAt) ([]byte, error) {
	b := make([]byte, h.entriesBytes())
	if _, err := f.ReadAt(b, int64(h.entriesLBA)*SectorSize); err != nil {
		return nil, fmt.Errorf("read GPT entries at sector %d: %w", h.entriesLBA, err)
	}
	if got := crc32.ChecksumIEEE(b); got != h.entriesCRC {
		return nil, fmt.Errorf("GPT partition entries at sector %d have a bad CRC (stored %08x, computed %08x): the table is damaged",
			h.entriesLBA, h.entriesCRC, got)
	}
	return b, nil
}

// encode writes the fields back into raw and recomputes the CRC.
func (h *gptHeader) encode() []byte {
	b := h.raw
	binary.LittleEndian.PutUint64(b[24:32], h.myLBA)
	binary.LittleEndian.PutUint64(b[32:40], h.alternateLBA)
	binary.LittleEndian.PutUint64(b[40:48], h.firstUsable)
	binary.LittleEndian.PutUint64(b[48:56], h.lastUsable)
	binary.LittleEndian.PutUint64(b[72:80], h.entriesLBA)
	binary.LittleEndian.PutUint32(b[88:92], h.entriesCRC)
	binary.LittleEndian.PutUint32(b[16:20], h.crc())
	return b
}

// fixProtectiveMBR sets the 0xEE entry to cover the disk (capped at 2^32-1
// sectors as the UEFI spec says), leaving boot code and other entries alone.
func fixProtectiveMBR(f *os.File, totalSectors uint64) error {
	b := make([]byte, SectorSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return err
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		return nil
	}
	for i := 0; i < 4; i++ {
		e := b[446+16*i : 446+16*(i+1)]
		if e[4] != 0xee {
			continue
		}
		start := uint64(binary.LittleEndian.Uint32(e[8:12]))
		size := min(totalSectors-start, 0xffffffff)
		binary.LittleEndian.PutUint32(e[12:16], uint32(size))
		copy(e[5:8], chsOf(start+size-1))
		_, err := f.WriteAt(b[446:512], 446)
		return err
	}
	return nil
}

// chsOf encodes an LBA as CHS bytes (head, sector|cyl-high, cyl-low) for the
// usual 255 heads / 63 sectors geometry, saturating at 1023/254/63 as
// partitioning tools do for sectors beyond CHS reach.
func chsOf(lba uint64) []byte {
	const heads, sectors = 255, 63
	c := lba / (heads * sectors)
	if c > 1023 {
		return []byte{0xfe, 0xff, 0xff}
	}
	h := (lba / sectors) % heads
	s := lba%sectors + 1
	return []byte{byte(h), byte(s) | byte((c>>2)&0xc0), byte(c)}
}
