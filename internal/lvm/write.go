package lvm

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Device is what writing needs: a PV opened read-write (its loop device,
// or the image file at the partition's offset through a SectionWriter).
type Device interface {
	io.ReaderAt
	io.WriterAt
}

// GrowResult says what Grow changed.
type GrowResult struct {
	PECountBefore, PECountAfter int64  // the PV's extents
	LV                          string // the extended LV, "" if none was asked
	LVBefore, LVAfter           int64  // its extents
}

// Grow makes the PV as large as its grown device (size bytes): the label's
// device_size, the metadata's dev_size and pe_count (whole extents after
// pe_start), and, when lv is not "", extends that linear LV's last segment
// over the free extents that directly follow it. The metadata is written
// as a new version (seqno + 1) into every metadata area, after the current
// text as LVM2 does (format-text.c, _vg_write_raw), with its checksums;
// the label follows. Refused, with nothing written: a VG of several PVs, a
// metadata area at the PV's end (it would have to move), a smaller size,
// an LV that is not linear or that no free extent follows.
func (pv *PVDisk) Grow(dev Device, size int64, lv string) (GrowResult, error) {
	vg := pv.VG
	var res GrowResult
	if len(vg.PVs) != 1 {
		return res, fmt.Errorf("VG %s spans %d PVs: growing handles a VG on one PV", vg.Name, len(vg.PVs))
	}
	mpv := vg.PVByID(pv.Label.UUID)
	if mpv == nil {
		return res, fmt.Errorf("VG %s does not list this PV (%s)", vg.Name, FormatUUID(pv.Label.UUID))
	}
	for _, a := range pv.Label.MetadataAreas {
		if int64(a.Offset+a.Size) > mpv.PEStart*SectorSize {
			return res, fmt.Errorf("the PV of VG %s has a metadata area at its end (byte %d), which growing would have to move: not handled", vg.Name, a.Offset)
		}
	}
	newDev := size / SectorSize
	newPE := (newDev - mpv.PEStart) / vg.ExtentSize
	res.PECountBefore, res.PECountAfter = mpv.PECount, newPE
	if newPE < mpv.PECount {
		return res, fmt.Errorf("the PV of VG %s would shrink from %d to %d extents", vg.Name, mpv.PECount, newPE)
	}
	mpv.PECount, mpv.DevSize = newPE, newDev
	mpv.sec.SetInt("dev_size", newDev)
	mpv.sec.SetInt("pe_count", newPE)

	if lv != "" {
		l := vg.LV(lv)
		if l == nil {
			return res, fmt.Errorf("VG %s has no LV %s", vg.Name, lv)
		}
		ext, err := vg.Linear(l)
		if err != nil {
			return res, err
		}
		res.LV, res.LVBefore = vg.Name+"/"+lv, ext.Count
		free := vg.FreeAfter(ext)
		if free == 0 {
			return res, fmt.Errorf("LV %s/%s cannot grow: no free extent follows it on its PV (the next extent belongs to another LV, or the PV ends there); "+
				"move the LVs after it, or leave disk_size unset", vg.Name, lv)
		}
		last := &l.Segments[len(l.Segments)-1]
		last.ExtentCount += free
		last.sec.SetInt("extent_count", last.ExtentCount)
		res.LVAfter = ext.Count + free
	}
	vg.Seqno++
	vg.sec.SetInt("seqno", vg.Seqno)
	if err := pv.writeMetadata(dev, vg.Text()); err != nil {
		return res, err
	}
	pv.Label.DeviceSize = uint64(size)
	return res, writeLabel(dev, pv.Label)
}

// writeMetadata writes text (without its NUL) as the current metadata of
// every metadata area of the PV.
func (pv *PVDisk) writeMetadata(dev Device, text []byte) error {
	text = append(text, 0)
	for _, a := range pv.Label.MetadataAreas {
		h, err := readMDAHeader(dev, a)
		if err != nil {
			return err
		}
		off := uint64(mdaHeaderLen)
		if len(h.locns) > 0 && h.locns[0].size > 0 {
			old := h.locns[0]
			off = alignUp(old.offset + old.size)
			if off+uint64(len(text)) > h.size {
				off = mdaHeaderLen
				if off+uint64(len(text)) > old.offset {
					return fmt.Errorf("the LVM metadata area at byte %d has no room for the new metadata (%d bytes) beside the old", a.Offset, len(text))
				}
			}
		}
		if err := writeArea(dev, a, h.size, off, text); err != nil {
			return err
		}
	}
	return nil
}

func alignUp(n uint64) uint64 { return (n + alignMeta - 1) / alignMeta * alignMeta }

// writeArea writes text at off in the metadata area a (of areaSize bytes),
// then the area's header pointing at it.
func writeArea(dev Device, a Area, areaSize, off uint64, text []byte) error {
	if off+uint64(len(text)) > areaSize {
		return fmt.Errorf("LVM metadata of %d bytes does not fit its area of %d bytes", len(text), areaSize)
	}
	if _, err := dev.WriteAt(text, int64(a.Offset+off)); err != nil {
		return fmt.Errorf("writing the LVM metadata: %w", err)
	}
	buf := make([]byte, mdaHeaderLen)
	le := binary.LittleEndian
	copy(buf[4:], mdaMagic)
	le.PutUint32(buf[20:], fmttVersion)
	le.PutUint64(buf[24:], a.Offset)
	le.PutUint64(buf[32:], areaSize)
	le.PutUint64(buf[40:], off)
	le.PutUint64(buf[48:], uint64(len(text)))
	le.PutUint32(buf[56:], crc(initialCRC, text))
	le.PutUint32(buf, crc(initialCRC, buf[4:]))
	if _, err := dev.WriteAt(buf, int64(a.Offset)); err != nil {
		return fmt.Errorf("writing the LVM metadata area header: %w", err)
	}
	return nil
}

// writeLabel writes the label and PV header into sector l.Sector.
func writeLabel(dev Device, l Label) error {
	sec := make([]byte, labelSize)
	le := binary.LittleEndian
	copy(sec, labelID)
	le.PutUint64(sec[8:], uint64(l.Sector))
	le.PutUint32(sec[20:], pvHeaderOff)
	copy(sec[24:], labelType)
	h := sec[pvHeaderOff:]
	copy(h, l.UUID)
	le.PutUint64(h[idLen:], l.DeviceSize)
	p := idLen + 8
	for _, list := range [][]Area{l.DataAreas, l.MetadataAreas} {
		for _, a := range list {
			le.PutUint64(h[p:], a.Offset)
			le.PutUint64(h[p+8:], a.Size)
			p += diskLocnSize
		}
		p += diskLocnSize // the zero terminator
	}
	if p+len(l.Extension) > len(h) {
		return fmt.Errorf("the LVM label does not fit one sector")
	}
	copy(h[p:], l.Extension)
	le.PutUint32(sec[16:], crc(initialCRC, sec[20:]))
	_, err := dev.WriteAt(sec, int64(l.Sector)*labelSize)
	if err != nil {
		return fmt.Errorf("writing the LVM label: %w", err)
	}
	return nil
}

// Create writes a new PV onto dev, as pvcreate and vgcreate would: the label
// in sector 1 with uuid (32 characters), size bytes, one metadata area from
// 4 KiB to peStart and one data area from peStart, then text (a VG's
// metadata) as the area's first metadata. For test fixtures and tools that
// lay out a disk without the lvm tools.
func Create(dev Device, uuid string, size, peStart int64, text []byte) error {
	if len(uuid) != idLen {
		return fmt.Errorf("an LVM UUID has %d characters, not %d", idLen, len(uuid))
	}
	const mdaStart = 4096
	if peStart <= mdaStart+mdaHeaderLen {
		return fmt.Errorf("pe_start %d leaves no room for metadata", peStart)
	}
	a := Area{Offset: mdaStart, Size: uint64(peStart - mdaStart)}
	if err := writeArea(dev, a, a.Size, mdaHeaderLen, append(append([]byte(nil), text...), 0)); err != nil {
		return err
	}
	// pv_header_extension: version 2, flags PV_EXT_USED, no bootloader area.
	ext := make([]byte, 8+diskLocnSize)
	binary.LittleEndian.PutUint32(ext, 2)
	binary.LittleEndian.PutUint32(ext[4:], 1)
	return writeLabel(dev, Label{
		Sector: 1, UUID: uuid, DeviceSize: uint64(size),
		DataAreas:     []Area{{Offset: uint64(peStart)}},
		MetadataAreas: []Area{a},
		Extension:     ext,
	})
}
