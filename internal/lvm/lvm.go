// Package lvm reads and updates LVM2 physical volumes in user space,
// without the lvm tools, device mapper or the host's LVM state: the PV
// label, the metadata area header and the VG metadata text. A linear LV is
// then one byte range of its PV, which a loop device with an offset and a
// size limit maps like device mapper's linear target would.
//
// The on-disk layout follows LVM2's sources: lib/label/label.h and
// label.c (the label), lib/format_text/layout.h and format-text.c (the PV
// header, the metadata area header and its raw locations),
// lib/misc/crc.c (the checksum).
package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	labelSize    = 512 // LABEL_SIZE: one sector
	labelScan    = 4   // LABEL_SCAN_SECTORS: the label lies in one of the first four sectors
	labelID      = "LABELONE"
	labelType    = "LVM2 001" // LVM2_LABEL
	mdaMagic     = "\x20LVM2\x20x[5A%r0N*>"
	mdaHeaderLen = 512 // MDA_HEADER_SIZE
	initialCRC   = 0xf597a6cf
	idLen        = 32               // ID_LEN: a UUID without dashes
	rawLocnSize  = 24               // struct raw_locn: offset, size (u64), checksum, flags (u32)
	rawIgnored   = 0x00000001       // RAW_LOCN_IGNORED
	pvHeaderOff  = 32               // struct label_header is 32 bytes; offset_xl says 32
	diskLocnSize = 16               // struct disk_locn: offset, size (u64), bytes
	fmttVersion  = 1                // FMTT_VERSION
	alignMeta    = 512              // MDA_ORIGINAL_ALIGNMENT
	maxMetaText  = 16 * 1024 * 1024 // a sanity bound on one VG's text
)

// ErrNoLabel means the device carries no LVM2 label.
var ErrNoLabel = errors.New("no LVM2 label in the first 4 sectors")

// crc is LVM2's calc_crc (lib/misc/crc.c): CRC-32 with the IEEE polynomial,
// reflected, started from the given value and not inverted at the end.
func crc(initial uint32, b []byte) uint32 {
	return ^crc32.Update(^initial, crc32.IEEETable, b)
}

// Area is a disk_locn: a byte range of the PV; Size 0 for a data area
// means "to the end of the device".
type Area struct {
	Offset, Size uint64
}

// Label is the PV label and header (struct label_header, struct
// pv_header in layout.h), all little-endian.
type Label struct {
	Sector        int    // which of the first 4 sectors holds it
	UUID          string // PV UUID, 32 characters without dashes
	DeviceSize    uint64 // bytes
	DataAreas     []Area // usually one: pe_start to the end
	MetadataAreas []Area // usually one at 4 KiB; a second one may sit at the end
	Extension     []byte // pv_header_extension and what follows, kept as read
}

// PVDisk is an LVM2 physical volume as read from its device: its label,
// the metadata area it read the VG from, and the VG.
type PVDisk struct {
	Label Label
	VG    *VG
	// The current metadata's place, for rewriting: the metadata area and
	// its raw location (offset from the area's start, size with the NUL).
	mda  Area
	text Area
}

// Read reads the PV label of dev (a PV: a partition or a whole disk, read
// from its offset 0), the header of its first metadata area that is in
// use, and the VG metadata text it points at, checking every checksum.
// It returns ErrNoLabel (wrapped) when dev is no PV, and an error when the
// PV holds no metadata (a PV created with --metadatacopies 0 relies on
// another PV of its VG: not handled).
func Read(dev io.ReaderAt) (*PVDisk, error) {
	lbl, err := readLabel(dev)
	if err != nil {
		return nil, err
	}
	pv := &PVDisk{Label: lbl}
	var errs []error
	for _, a := range lbl.MetadataAreas {
		text, loc, err := readMetadata(dev, a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if loc.Size == 0 {
			continue // an ignored or empty area
		}
		vg, err := ParseVG(text)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pv.VG, pv.mda, pv.text = vg, a, loc
		return pv, nil
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, fmt.Errorf("the PV %s holds no VG metadata (metadata areas: %d)", FormatUUID(lbl.UUID), len(lbl.MetadataAreas))
}

func readLabel(dev io.ReaderAt) (Label, error) {
	buf := make([]byte, labelScan*labelSize)
	n, err := dev.ReadAt(buf, 0)
	if n < labelSize {
		if err == nil || err == io.EOF {
			return Label{}, ErrNoLabel
		}
		return Label{}, fmt.Errorf("reading the LVM label: %w", err)
	}
	buf = buf[:n]
	for s := 0; (s+1)*labelSize <= len(buf); s++ {
		sec := buf[s*labelSize : (s+1)*labelSize]
		if string(sec[:8]) != labelID {
			continue
		}
		le := binary.LittleEndian
		if le.Uint64(sec[8:]) != uint64(s) {
			continue // a label copied from elsewhere (LVM2 label.c checks sector_xl)
		}
		if got, want := crc(initialCRC, sec[20:]), le.Uint32(sec[16:]); got != want {
			return Label{}, fmt.Errorf("the LVM label in sector %d has a bad checksum (%#x, want %#x)", s, got, want)
		}
		if string(sec[24:32]) != labelType {
			return Label{}, fmt.Errorf("the LVM label in sector %d is of type %q, not %q", s, sec[24:32], labelType)
		}
		off := int(le.Uint32(sec[20:]))
		if off < 32 || off+idLen+8 > labelSize {
			return Label{}, fmt.Errorf("the LVM label in sector %d points outside its sector (%d)", s, off)
		}
		h := sec[off:]
		lbl := Label{Sector: s, UUID: string(h[:idLen]), DeviceSize: le.Uint64(h[idLen:])}
		p := idLen + 8
		list := func() ([]Area, error) {
			var out []Area
			for {
				if p+diskLocnSize > len(h) {
					return nil, fmt.Errorf("the LVM label's area lists run past its sector")
				}
				a := Area{le.Uint64(h[p:]), le.Uint64(h[p+8:])}
				p += diskLocnSize
				if a.Offset == 0 {
					return out, nil
				}
				out = append(out, a)
			}
		}
		if lbl.DataAreas, err = list(); err != nil {
			return Label{}, err
		}
		if lbl.MetadataAreas, err = list(); err != nil {
			return Label{}, err
		}
		lbl.Extension = append([]byte(nil), h[p:]...)
		return lbl, nil
	}
	return Label{}, ErrNoLabel
}

// mdaHeader is struct mda_header of layout.h.
type mdaHeader struct {
	start, size uint64
	locns       []rawLocn
}

type rawLocn struct {
	offset, size    uint64
	checksum, flags uint32
}

func readMDAHeader(dev io.ReaderAt, a Area) (mdaHeader, error) {
	buf := make([]byte, mdaHeaderLen)
	if _, err := dev.ReadAt(buf, int64(a.Offset)); err != nil {
		return mdaHeader{}, fmt.Errorf("reading the LVM metadata area header at %d: %w", a.Offset, err)
	}
	le := binary.LittleEndian
	if string(buf[4:20]) != mdaMagic {
		return mdaHeader{}, fmt.Errorf("no LVM metadata area header at byte %d (wrong magic)", a.Offset)
	}
	if got, want := crc(initialCRC, buf[4:]), le.Uint32(buf); got != want {
		return mdaHeader{}, fmt.Errorf("the LVM metadata area header at byte %d has a bad checksum", a.Offset)
	}
	if v := le.Uint32(buf[20:]); v != fmttVersion {
		return mdaHeader{}, fmt.Errorf("the LVM metadata area header at byte %d is of version %d, not %d", a.Offset, v, fmttVersion)
	}
	h := mdaHeader{start: le.Uint64(buf[24:]), size: le.Uint64(buf[32:])}
	if h.start != a.Offset {
		return mdaHeader{}, fmt.Errorf("the LVM metadata area header at byte %d says it starts at %d", a.Offset, h.start)
	}
	for p := 40; p+rawLocnSize <= len(buf); p += rawLocnSize {
		l := rawLocn{le.Uint64(buf[p:]), le.Uint64(buf[p+8:]), le.Uint32(buf[p+16:]), le.Uint32(buf[p+20:])}
		if l.offset == 0 {
			break
		}
		h.locns = append(h.locns, l)
	}
	return h, nil
}

// readMetadata returns the current metadata text of the area a: the text
// at raw_locns[0], which wraps around to just after the header when it
// runs past the area's end (format-text.c, _vg_read_raw_area).
func readMetadata(dev io.ReaderAt, a Area) ([]byte, Area, error) {
	h, err := readMDAHeader(dev, a)
	if err != nil {
		return nil, Area{}, err
	}
	if len(h.locns) == 0 || h.locns[0].flags&rawIgnored != 0 {
		return nil, Area{}, nil
	}
	l := h.locns[0]
	if l.size > maxMetaText || l.size > h.size || l.offset >= h.size || l.offset < mdaHeaderLen {
		return nil, Area{}, fmt.Errorf("the LVM metadata at byte %d has an impossible place (offset %d, size %d in an area of %d)", a.Offset, l.offset, l.size, h.size)
	}
	text := make([]byte, l.size)
	first := min(l.size, h.size-l.offset)
	if _, err := dev.ReadAt(text[:first], int64(h.start+l.offset)); err != nil {
		return nil, Area{}, fmt.Errorf("reading the LVM metadata: %w", err)
	}
	if first < l.size {
		if _, err := dev.ReadAt(text[first:], int64(h.start+mdaHeaderLen)); err != nil {
			return nil, Area{}, fmt.Errorf("reading the LVM metadata: %w", err)
		}
	}
	if got := crc(initialCRC, text); got != l.checksum {
		return nil, Area{}, fmt.Errorf("the LVM metadata at byte %d has a bad checksum (%#x, want %#x)", a.Offset, got, l.checksum)
	}
	return text, Area{l.offset, l.size}, nil
}

// FormatUUID writes a 32-character LVM UUID the way LVM shows it, in
// groups of 6-4-4-4-4-4-6 joined by dashes (LVM2 lib/uuid/uuid.c id_write).
func FormatUUID(id string) string {
	if len(id) != idLen {
		return id
	}
	var b bytes.Buffer
	for i, n := range []int{6, 4, 4, 4, 4, 4, 6} {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(id[:n])
		id = id[n:]
	}
	return b.String()
}
