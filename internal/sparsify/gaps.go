package sparsify

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
)

// span is a byte range [start, end) of the image file.
type span struct{ start, end int64 }

// freeSpans lists the space outside every partition that may be punched:
// between partitions and after the last one. The area before the first
// partition stays (MBR boot code, GRUB's core image in the post-MBR gap,
// the primary GPT, raw ARM boot loaders), and so does a GPT's backup
// header and entries at the end. MBR extended containers count as used:
// partition.Read does not list the logical partitions inside them.
func freeSpans(disk string, t *partition.Table) ([]span, error) {
	if t.Kind == partition.None || len(t.Partitions) == 0 {
		return nil, nil
	}
	var used []span
	for _, p := range t.Partitions {
		if p.Size > 0 {
			used = append(used, span{p.Start, p.End()})
		}
	}
	limit := t.DiskSize
	switch t.Kind {
	case partition.MBR:
		ext, err := extendedSpans(disk)
		if err != nil {
			return nil, err
		}
		used = append(used, ext...)
	case partition.GPT:
		last, err := gptLastUsable(disk)
		if err != nil {
			return nil, err
		}
		limit = min(limit, last)
	}
	if len(used) == 0 {
		return nil, nil
	}
	sort.Slice(used, func(i, j int) bool { return used[i].start < used[j].start })
	var gaps []span
	at := used[0].start
	for _, u := range used {
		if u.start > at && at < limit {
			gaps = append(gaps, span{at, min(u.start, limit)})
		}
		at = max(at, u.end)
	}
	if at < limit {
		gaps = append(gaps, span{at, limit})
	}
	return gaps, nil
}

// extendedSpans are the MBR's extended partition containers, whose
// logical partitions are not in the table read by partition.Read.
func extendedSpans(disk string) ([]span, error) {
	mbr := make([]byte, 512)
	if err := readAt(disk, mbr, 0); err != nil {
		return nil, err
	}
	var out []span
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		switch e[4] {
		case 0x05, 0x0f, 0x85:
			start := int64(binary.LittleEndian.Uint32(e[8:])) * partition.SectorSize
			size := int64(binary.LittleEndian.Uint32(e[12:])) * partition.SectorSize
			out = append(out, span{start, start + size})
		}
	}
	return out, nil
}

// gptLastUsable is the byte offset just past the GPT's last usable LBA,
// read from the primary header: what follows is the backup entries and
// header.
func gptLastUsable(disk string) (int64, error) {
	hdr := make([]byte, 92)
	if err := readAt(disk, hdr, partition.SectorSize); err != nil {
		return 0, err
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return 0, fmt.Errorf("sparsify %s: no primary GPT header at byte %d; not punching past the partitions without knowing where the backup header is", disk, partition.SectorSize)
	}
	return int64(binary.LittleEndian.Uint64(hdr[48:])+1) * partition.SectorSize, nil
}

func readAt(path string, b []byte, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sparsify: %w", err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, off); err != nil {
		return fmt.Errorf("sparsify: reading %d bytes at %d of %s: %w", len(b), off, path, err)
	}
	return nil
}

// punch turns the spans of disk into holes; the file keeps its size.
func punch(disk string, spans []span) error {
	if len(spans) == 0 {
		return nil
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sparsify: %w", err)
	}
	defer f.Close()
	for _, s := range spans {
		if s.end <= s.start {
			continue
		}
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, s.start, s.end-s.start); err != nil {
			return fmt.Errorf("sparsify: punching a hole at bytes [%d, %d) of %s: %w", s.start, s.end, disk, err)
		}
	}
	return f.Close()
}
