package lvm

import (
	"fmt"
	"slices"
	"strings"
)

// SectorSize is the unit of extent_size, pe_start and dev_size in the
// metadata text (512-byte sectors, LVM2 lib/format_text/import_vsn1.c).
const SectorSize = 512

// VG is a volume group as its metadata text describes it.
type VG struct {
	Name       string
	ID         string
	Seqno      int64
	ExtentSize int64 // sectors
	PVs        []*PV
	LVs        []*LV

	root *Section // the whole text, for rewriting
	sec  *Section // the VG's section in it
}

// PV is one physical volume of a VG (a `pvN { ... }` of physical_volumes).
type PV struct {
	Name    string // the metadata's own name, "pv0"
	ID      string // the PV UUID, with dashes
	Device  string // the device name the host that wrote it saw (a hint only)
	DevSize int64  // sectors
	PEStart int64  // sectors from the PV's start to extent 0
	PECount int64

	sec *Section
}

// LV is one logical volume.
type LV struct {
	Name     string
	ID       string
	Status   []string
	Segments []Segment
}

// Visible reports whether the LV is a user's LV rather than a hidden part
// of another (a thin pool's _tdata, a raid image): status has VISIBLE.
func (lv *LV) Visible() bool { return slices.Contains(lv.Status, "VISIBLE") }

// Segment is one `segmentN { ... }` of an LV: extent_count extents of the
// LV from start_extent on, laid out as Type says.
type Segment struct {
	StartExtent int64
	ExtentCount int64
	Type        string // "striped" (also linear), "thin", "raid1", "mirror", "cache"...
	StripeCount int64
	Stripes     []Stripe

	sec *Section
}

// Stripe is one entry of a segment's stripes list: the PV and its first
// physical extent.
type Stripe struct {
	PV      string // "pv0"
	StartPE int64
}

// ParseVG reads the VG out of metadata text: its one top-level section
// (the other top-level items are contents, version, description, ...).
func ParseVG(text []byte) (*VG, error) {
	root, err := ParseText(text)
	if err != nil {
		return nil, err
	}
	subs := root.Subsections()
	if len(subs) != 1 {
		return nil, fmt.Errorf("LVM metadata holds %d volume groups, want 1", len(subs))
	}
	vg := &VG{Name: subs[0].Key, root: root, sec: subs[0].Section}
	s := vg.sec
	vg.ID = s.String("id")
	vg.Seqno, _ = s.Int("seqno")
	var ok bool
	if vg.ExtentSize, ok = s.Int("extent_size"); !ok || vg.ExtentSize <= 0 {
		return nil, fmt.Errorf("VG %s: no extent_size", vg.Name)
	}
	if pvs := s.Sub("physical_volumes"); pvs != nil {
		for _, n := range pvs.Subsections() {
			pv := &PV{Name: n.Key, ID: n.Section.String("id"), Device: n.Section.String("device"), sec: n.Section}
			pv.DevSize, _ = n.Section.Int("dev_size")
			pv.PEStart, _ = n.Section.Int("pe_start")
			pv.PECount, _ = n.Section.Int("pe_count")
			vg.PVs = append(vg.PVs, pv)
		}
	}
	if lvs := s.Sub("logical_volumes"); lvs != nil {
		for _, n := range lvs.Subsections() {
			lv, err := parseLV(n)
			if err != nil {
				return nil, fmt.Errorf("VG %s: %w", vg.Name, err)
			}
			vg.LVs = append(vg.LVs, lv)
		}
	}
	return vg, nil
}

func parseLV(n *Node) (*LV, error) {
	lv := &LV{Name: n.Key, ID: n.Section.String("id"), Status: n.Section.Strings("status")}
	for _, sn := range n.Section.Subsections() {
		if !strings.HasPrefix(sn.Key, "segment") {
			continue
		}
		ss := sn.Section
		seg := Segment{Type: ss.String("type"), sec: ss}
		seg.StartExtent, _ = ss.Int("start_extent")
		seg.ExtentCount, _ = ss.Int("extent_count")
		seg.StripeCount, _ = ss.Int("stripe_count")
		if v, ok := ss.Get("stripes"); ok {
			for i := 0; i+1 < len(v.Items); i += 2 {
				if v.Items[i].Kind != KindString || v.Items[i+1].Kind != KindInt {
					return nil, fmt.Errorf("LV %s %s: stripes is not a list of PV names and extents", lv.Name, sn.Key)
				}
				seg.Stripes = append(seg.Stripes, Stripe{PV: v.Items[i].Str, StartPE: v.Items[i+1].Int})
			}
		}
		lv.Segments = append(lv.Segments, seg)
	}
	slices.SortFunc(lv.Segments, func(a, b Segment) int { return int(a.StartExtent - b.StartExtent) })
	return lv, nil
}

// PV returns the VG's PV of the metadata name (pv0) or nil.
func (vg *VG) PV(name string) *PV {
	for _, pv := range vg.PVs {
		if pv.Name == name {
			return pv
		}
	}
	return nil
}

// PVByID returns the PV with that UUID (dashes or not) or nil.
func (vg *VG) PVByID(id string) *PV {
	id = strings.ReplaceAll(id, "-", "")
	for _, pv := range vg.PVs {
		if strings.ReplaceAll(pv.ID, "-", "") == id {
			return pv
		}
	}
	return nil
}

// LV returns the LV of that name or nil.
func (vg *VG) LV(name string) *LV {
	for _, lv := range vg.LVs {
		if lv.Name == name {
			return lv
		}
	}
	return nil
}

// Extents is a linear LV's place: Count extents on PV from StartPE on.
type Extents struct {
	PV      *PV
	StartPE int64
	Count   int64
}

// Offset is the byte offset of the range from the PV's start:
// pe_start + StartPE extents (LVM2 lib/activate/dev_manager.c maps a
// striped segment's area at pe_start + pe * extent_size sectors).
func (e Extents) Offset(vg *VG) int64 {
	return (e.PV.PEStart + e.StartPE*vg.ExtentSize) * SectorSize
}

// Size is the range's length in bytes.
func (e Extents) Size(vg *VG) int64 { return e.Count * vg.ExtentSize * SectorSize }

// Linear returns where lv lies when it is one contiguous range of one PV:
// one "striped" segment with stripe_count 1 (LVM's linear LV), or several
// such segments that follow each other on the same PV. Anything else is
// refused with why, naming the LV: a loop device maps one byte range, and
// there is no device mapper to join or transform more.
func (vg *VG) Linear(lv *LV) (Extents, error) {
	name := vg.Name + "/" + lv.Name
	if snap := vg.snapshotOf(lv.Name); snap != "" {
		return Extents{}, fmt.Errorf("LV %s is the origin of snapshot %s: writing it without device mapper's copy-on-write would corrupt the snapshot", name, snap)
	}
	if len(lv.Segments) == 0 {
		return Extents{}, fmt.Errorf("LV %s has no segments", name)
	}
	var ext Extents
	for i, seg := range lv.Segments {
		switch {
		case seg.Type != "striped":
			return Extents{}, fmt.Errorf("LV %s is a %s LV: only linear LVs can be mapped without device mapper", name, seg.Type)
		case seg.StripeCount != 1 || len(seg.Stripes) != 1:
			return Extents{}, fmt.Errorf("LV %s is striped (%d stripes): only linear LVs can be mapped without device mapper", name, max(seg.StripeCount, int64(len(seg.Stripes))))
		}
		pv := vg.PV(seg.Stripes[0].PV)
		if pv == nil {
			return Extents{}, fmt.Errorf("LV %s lies on %s, which VG %s does not list", name, seg.Stripes[0].PV, vg.Name)
		}
		if i == 0 {
			if seg.StartExtent != 0 {
				return Extents{}, fmt.Errorf("LV %s has no segment at its extent 0", name)
			}
			ext = Extents{PV: pv, StartPE: seg.Stripes[0].StartPE, Count: seg.ExtentCount}
			continue
		}
		if pv != ext.PV || seg.StartExtent != ext.Count || seg.Stripes[0].StartPE != ext.StartPE+ext.Count {
			return Extents{}, fmt.Errorf("LV %s has %d segments that are not one contiguous range of one PV: only such LVs can be mapped without device mapper", name, len(lv.Segments))
		}
		ext.Count += seg.ExtentCount
	}
	if ext.StartPE < 0 || ext.Count <= 0 || ext.StartPE+ext.Count > ext.PV.PECount {
		return Extents{}, fmt.Errorf("LV %s: extents %d-%d lie outside %s's %d extents", name, ext.StartPE, ext.StartPE+ext.Count-1, ext.PV.Name, ext.PV.PECount)
	}
	return ext, nil
}

// snapshotOf names an old-style (copy-on-write) snapshot whose origin is
// the LV called origin, or "": a segment of type "snapshot" names its
// origin (LVM2 lib/snapshot/snapshot.c, _snap_text_import).
func (vg *VG) snapshotOf(origin string) string {
	for _, lv := range vg.LVs {
		for _, seg := range lv.Segments {
			if seg.Type == "snapshot" && seg.sec.String("origin") == origin {
				return seg.sec.String("cow_store")
			}
		}
	}
	return ""
}

// FreeAfter counts the free extents that follow e on its PV: up to the
// next extent any LV's segment uses, or the PV's end.
func (vg *VG) FreeAfter(e Extents) int64 {
	end := e.StartPE + e.Count
	next := e.PV.PECount
	for _, lv := range vg.LVs {
		for _, seg := range lv.Segments {
			for _, st := range seg.Stripes {
				if st.PV != e.PV.Name {
					continue
				}
				// Each stripe of a striped segment holds extent_count/stripes extents.
				n := seg.ExtentCount / max(int64(len(seg.Stripes)), 1)
				if st.StartPE+n > end && st.StartPE < next {
					next = max(st.StartPE, end)
				}
			}
		}
	}
	return next - end
}

// FreeRanges lists pv's extents that no LV's segment uses, in order: what
// a sparsifier may punch out of a PV.
func (vg *VG) FreeRanges(pv *PV) []Extents {
	used := make([]bool, pv.PECount)
	for _, lv := range vg.LVs {
		for _, seg := range lv.Segments {
			n := seg.ExtentCount / max(int64(len(seg.Stripes)), 1)
			for _, st := range seg.Stripes {
				if st.PV != pv.Name {
					continue
				}
				for e := max(st.StartPE, 0); e < min(st.StartPE+n, pv.PECount); e++ {
					used[e] = true
				}
			}
		}
	}
	var out []Extents
	for e := int64(0); e < pv.PECount; e++ {
		if used[e] {
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k].StartPE+out[k].Count == e {
			out[k].Count++
		} else {
			out = append(out, Extents{PV: pv, StartPE: e, Count: 1})
		}
	}
	return out
}

// MapperName is the LV's name under /dev/mapper: VG and LV joined by a
// dash, each dash inside a name doubled (LVM2 libdm/libdm-string.c
// dm_build_dm_name and _quote_hyphens): VG my-vg, LV lv-1 is my--vg-lv--1.
func MapperName(vg, lv string) string {
	q := func(s string) string { return strings.ReplaceAll(s, "-", "--") }
	return q(vg) + "-" + q(lv)
}

// Text is the metadata as text again, with the changes made through the
// VG's setters (SetPVSize, ExtendLV).
func (vg *VG) Text() []byte { return Format(vg.root) }
