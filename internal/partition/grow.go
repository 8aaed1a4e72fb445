package partition

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
)

// mbrMaxSectors is the most an MBR can address: sizes and starts are 32 bits.
const mbrMaxSectors = 1 << 32

// GrowLast extends the partition that ends last to the end of the disk,
// after the image file was enlarged (diskimage.Grow). For GPT it also moves
// the backup header and entries to the new end, updates the primary
// header's alternate and last-usable LBAs, the protective MBR and all CRCs.
// It returns the grown partition; the filesystem inside is not touched.
//
// The header fields are written here rather than through go-diskfs, whose
// Write rewrites the entry array at LBA 2 whatever the header says, zeroes
// the other entries of a hybrid MBR and truncates the protective MBR's size
// to 32 bits on disks over 2 TiB.
func GrowLast(path string) (Partition, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Partition{}, fmt.Errorf("grow last partition: %w", err)
	}
	defer f.Close()
	t, err := readFile(f, path)
	if err != nil {
		return Partition{}, err
	}
	var number int
	switch t.Kind {
	case MBR:
		number, err = growMBR(f, path, t)
	case GPT:
		number, err = growGPT(f, path, t)
	default:
		return Partition{}, fmt.Errorf("grow last partition of %s: the disk has no partition table (grow its filesystem directly)", path)
	}
	if err != nil {
		return Partition{}, err
	}
	if err := f.Sync(); err != nil {
		return Partition{}, fmt.Errorf("grow last partition of %s: sync: %w", path, err)
	}
	t, err = readFile(f, path)
	if err != nil {
		return Partition{}, fmt.Errorf("grow last partition of %s: re-reading the table after the change: %w", path, err)
	}
	p, ok := t.ByNumber(number)
	if !ok {
		return Partition{}, fmt.Errorf("grow last partition of %s: partition %d vanished", path, number)
	}
	return p, nil
}

func growMBR(f *os.File, path string, t *Table) (int, error) {
	b := make([]byte, SectorSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return 0, fmt.Errorf("grow last partition of %s: read MBR: %w", path, err)
	}
	// Look at every entry, extended containers included: a primary
	// partition followed by an extended one is not last.
	last, lastEnd := -1, uint64(0)
	for i := 0; i < 4; i++ {
		e := b[446+16*i : 446+16*(i+1)]
		size := uint64(binary.LittleEndian.Uint32(e[12:16]))
		if e[4] == 0 || size == 0 {
			continue
		}
		if end := uint64(binary.LittleEndian.Uint32(e[8:12])) + size; end > lastEnd {
			last, lastEnd = i, end
		}
	}
	if last < 0 {
		return 0, fmt.Errorf("grow last partition of %s: the MBR has no partitions", path)
	}
	e := b[446+16*last : 446+16*(last+1)]
	if isExtended(e[4]) {
		return 0, fmt.Errorf("grow last partition of %s: the partition that ends last (%d) is an extended partition; logical partitions are not supported", path, last+1)
	}
	total := uint64(t.DiskSize / SectorSize)
	if total > mbrMaxSectors {
		return 0, fmt.Errorf("grow last partition of %s: the disk is %d bytes but an MBR cannot address more than %d bytes (2^32 sectors); use a smaller disk size or a GPT image",
			path, t.DiskSize, uint64(mbrMaxSectors)*SectorSize)
	}
	start := uint64(binary.LittleEndian.Uint32(e[8:12]))
	newSize := total - start
	if newSize > 0xffffffff {
		newSize = 0xffffffff
	}
	if start+newSize < lastEnd {
		return 0, fmt.Errorf("grow last partition of %s: partition %d ends at sector %d, past the end of the disk (%d sectors)", path, last+1, lastEnd, total)
	}
	binary.LittleEndian.PutUint32(e[12:16], uint32(newSize))
	copy(e[5:8], chsOf(start+newSize-1))
	if _, err := f.WriteAt(b[446:512], 446); err != nil {
		return 0, fmt.Errorf("grow last partition of %s: write MBR: %w", path, err)
	}
	return last + 1, nil
}

func growGPT(f *os.File, path string, t *Table) (int, error) {
	fail := func(format string, a ...any) (int, error) {
		return 0, fmt.Errorf("grow last partition of %s: "+format, append([]any{path}, a...)...)
	}
	h, err := readGPTHeader(f, 1)
	if err != nil {
		return fail("%v", err)
	}
	entries, err := h.readEntries(f)
	if err != nil {
		return fail("%v", err)
	}

	total := uint64(t.DiskSize / SectorSize)
	oldAlt := h.alternateLBA
	newAlt := total - 1
	if newAlt < oldAlt {
		return fail("the disk (%d sectors) is smaller than its GPT says (%d sectors)", total, oldAlt+1)
	}
	backupEntriesLBA := newAlt - h.entriesSectors()
	newLastUsable := backupEntriesLBA - 1

	// The entry that ends last.
	last, lastEnd := -1, uint64(0)
	zero := make([]byte, 16)
	for i := 0; i < int(h.entryCount); i++ {
		e := entries[i*int(h.entrySize) : (i+1)*int(h.entrySize)]
		if bytes.Equal(e[0:16], zero) {
			continue
		}
		if end := binary.LittleEndian.Uint64(e[40:48]); last < 0 || end > lastEnd {
			last, lastEnd = i, end
		}
	}
	if last < 0 {
		return fail("the GPT has no partitions")
	}
	if lastEnd > newLastUsable {
		return fail("partition %d ends at sector %d, after the last usable sector %d", last+1, lastEnd, newLastUsable)
	}
	e := entries[last*int(h.entrySize) : (last+1)*int(h.entrySize)]
	binary.LittleEndian.PutUint64(e[40:48], newLastUsable)

	h.entriesCRC = crc32.ChecksumIEEE(entries)
	h.alternateLBA = newAlt
	h.lastUsable = newLastUsable
	primary := append([]byte(nil), h.encode()...)

	backup := &gptHeader{raw: append([]byte(nil), primary...), size: h.size,
		myLBA: newAlt, alternateLBA: 1, firstUsable: h.firstUsable, lastUsable: newLastUsable,
		entriesLBA: backupEntriesLBA, entriesCRC: h.entriesCRC}
	backupBytes := backup.encode()

	// Backup first, then primary: if we stop half way, one copy is whole.
	writes := []struct {
		what string
		b    []byte
		lba  uint64
	}{
		{"backup GPT entries", entries, backupEntriesLBA},
		{"backup GPT header", backupBytes, newAlt},
		{"primary GPT entries", entries, h.entriesLBA},
		{"primary GPT header", primary, 1},
	}
	for i, w := range writes {
		if _, err := f.WriteAt(w.b, int64(w.lba)*SectorSize); err != nil {
			return fail("write %s at sector %d: %v", w.what, w.lba, err)
		}
		if i == 1 {
			if err := f.Sync(); err != nil {
				return fail("sync: %v", err)
			}
		}
	}
	// A stale backup header in the middle of the disk would confuse tools that scan.
	if oldAlt != newAlt && oldAlt < backupEntriesLBA {
		if _, err := f.WriteAt(make([]byte, SectorSize), int64(oldAlt)*SectorSize); err != nil {
			return fail("clear old backup GPT header at sector %d: %v", oldAlt, err)
		}
	}
	if err := fixProtectiveMBR(f, total); err != nil {
		return fail("update protective MBR: %v", err)
	}
	return last + 1, nil
}
