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
// What CheckGrow refuses (swap, extended or logical partition last) is
// refused here too, before anything is written.
//
// The header fields are written here rather than through go-diskfs, whose
// Write rewrites the entry array at LBA 2 whatever the header says, zeroes
// the other entries of a hybrid MBR and truncates the protective MBR's size
// to 32 bits on disks over 2 TiB.
func GrowLast(path string) (Partition, error) {
	if err := CheckGrow(path); err != nil {
		return Partition{}, fmt.Errorf("grow last partition of %s: %w", path, err)
	}
	return resizeLast(path, -1, 0)
}

// ShrinkLast makes the disk diskSize bytes (a multiple of the sector size,
// smaller than now): the partition that ends last then ends where the new
// disk (or, for GPT, its new backup entries) begins, the GPT backup moves
// there, and the file is truncated. keep is how many bytes from the
// partition's start must stay inside it (its shrunk filesystem); a disk
// too small for them is refused before anything is written.
func ShrinkLast(path string, diskSize, keep int64) (Partition, error) {
	if diskSize <= 0 || diskSize%SectorSize != 0 {
		return Partition{}, fmt.Errorf("shrink last partition of %s: %d bytes is not a positive multiple of %d", path, diskSize, SectorSize)
	}
	return resizeLast(path, diskSize, keep)
}

// resizeLast moves the end of the partition that ends last to the end of a
// disk of diskSize bytes; diskSize < 0 means the file's current size (grow).
func resizeLast(path string, diskSize, keep int64) (Partition, error) {
	what := "grow"
	if diskSize >= 0 {
		what = "shrink"
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Partition{}, fmt.Errorf("%s last partition: %w", what, err)
	}
	defer f.Close()
	t, err := readFile(f, path)
	if err != nil {
		return Partition{}, err
	}
	shrink := diskSize >= 0
	if shrink {
		if diskSize > t.DiskSize {
			return Partition{}, fmt.Errorf("shrink last partition of %s: %d bytes is larger than the disk (%d bytes)", path, diskSize, t.DiskSize)
		}
	} else {
		diskSize = t.DiskSize
	}
	r := resize{f: f, path: path, what: what, total: uint64(diskSize / SectorSize), shrink: shrink, keep: keep}
	var number int
	switch t.Kind {
	case MBR:
		number, err = r.mbr()
	case GPT:
		number, err = r.gpt()
	default:
		return Partition{}, fmt.Errorf("%s last partition of %s: the disk has no partition table (resize its filesystem directly)", what, path)
	}
	if err != nil {
		return Partition{}, err
	}
	if shrink {
		if err := f.Truncate(diskSize); err != nil {
			return Partition{}, fmt.Errorf("shrink %s to %d bytes: %w", path, diskSize, err)
		}
	}
	if err := f.Sync(); err != nil {
		return Partition{}, fmt.Errorf("%s last partition of %s: sync: %w", what, path, err)
	}
	t, err = readFile(f, path)
	if err != nil {
		return Partition{}, fmt.Errorf("%s last partition of %s: re-reading the table after the change: %w", what, path, err)
	}
	p, ok := t.ByNumber(number)
	if !ok {
		return Partition{}, fmt.Errorf("%s last partition of %s: partition %d vanished", what, path, number)
	}
	return p, nil
}

// resize is one change of the last partition's end.
type resize struct {
	f      *os.File
	path   string
	what   string // "grow" or "shrink", for messages
	total  uint64 // the disk's size after the change, in sectors
	shrink bool
	keep   int64 // bytes from the partition's start that must stay in it
}

func (r *resize) fail(format string, a ...any) (int, error) {
	return 0, fmt.Errorf("%s last partition of %s: "+format, append([]any{r.what, r.path}, a...)...)
}

// keeps checks, when shrinking, that a partition from sector start to just
// before sector end still holds its keep bytes.
func (r *resize) keeps(number int, start, end uint64) error {
	if !r.shrink || int64(end-start)*SectorSize >= r.keep {
		return nil
	}
	_, err := r.fail("partition %d would be %d bytes, smaller than the %d bytes it must keep", number, int64(end-start)*SectorSize, r.keep)
	return err
}

func (r *resize) mbr() (int, error) {
	f := r.f
	b := make([]byte, SectorSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return r.fail("read MBR: %v", err)
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
		return r.fail("the MBR has no partitions")
	}
	e := b[446+16*last : 446+16*(last+1)]
	if isExtended(e[4]) {
		return r.fail("the partition that ends last (%d) is an extended partition; logical partitions are not supported", last+1)
	}
	total := r.total
	if total > mbrMaxSectors {
		return r.fail("the disk is %d bytes but an MBR cannot address more than %d bytes (2^32 sectors); use a smaller disk size or a GPT image",
			total*SectorSize, uint64(mbrMaxSectors)*SectorSize)
	}
	start := uint64(binary.LittleEndian.Uint32(e[8:12]))
	if start >= total {
		return r.fail("partition %d starts at sector %d, past the new end of the disk (%d sectors)", last+1, start, total)
	}
	newSize := total - start
	if newSize > 0xffffffff {
		newSize = 0xffffffff
	}
	if !r.shrink && start+newSize < lastEnd {
		return r.fail("partition %d ends at sector %d, past the end of the disk (%d sectors)", last+1, lastEnd, total)
	}
	if err := r.keeps(last+1, start, start+newSize); err != nil {
		return 0, err
	}
	binary.LittleEndian.PutUint32(e[12:16], uint32(newSize))
	copy(e[5:8], chsOf(start+newSize-1))
	if _, err := f.WriteAt(b[446:512], 446); err != nil {
		return r.fail("write MBR: %v", err)
	}
	return last + 1, nil
}

func (r *resize) gpt() (int, error) {
	f, fail := r.f, r.fail
	h, err := readGPTHeader(f, 1)
	if err != nil {
		return fail("%v", err)
	}
	entries, err := h.readEntries(f)
	if err != nil {
		return fail("%v", err)
	}

	total := r.total
	oldAlt := h.alternateLBA
	newAlt := total - 1
	if newAlt < oldAlt && !r.shrink {
		return fail("the disk (%d sectors) is smaller than its GPT says (%d sectors)", total, oldAlt+1)
	}
	if total < h.firstUsable+h.entriesSectors()+2 {
		return fail("a disk of %d sectors cannot hold its GPT", total)
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
	e := entries[last*int(h.entrySize) : (last+1)*int(h.entrySize)]
	start := binary.LittleEndian.Uint64(e[32:40])
	switch {
	case r.shrink && start > newLastUsable:
		return fail("partition %d starts at sector %d, after the new last usable sector %d", last+1, start, newLastUsable)
	case !r.shrink && lastEnd > newLastUsable:
		return fail("partition %d ends at sector %d, after the last usable sector %d", last+1, lastEnd, newLastUsable)
	}
	// GPT end LBAs are inclusive.
	if err := r.keeps(last+1, start, newLastUsable+1); err != nil {
		return 0, err
	}
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
