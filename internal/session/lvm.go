package session

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/lvm"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
)

// lvmMember is blkid's type for an LVM2 PV.
const lvmMember = "LVM2_member"

// PVInfo is what an attached partition holds when it is an LVM2 PV.
type PVInfo struct {
	VG       string
	LVs      []string          // visible LVs, in metadata order
	Unusable map[string]string // LV -> why it is not attached
	Err      error             // the metadata could not be read

	disk *lvm.PVDisk
}

// LVInfo says which LV an attached Partition is.
type LVInfo struct {
	VG, Name string
	PV       *Partition // the PV's partition
	Extents  lvm.Extents
}

// String is VG/LV.
func (l *LVInfo) String() string { return l.VG + "/" + l.Name }

func init() { holders[lvmMember] = holdsLVMPV }

// holdsLVMPV describes a PV for the messages that list a disk: its VG and
// LVs, and why an LV is not attached.
func holdsLVMPV(s *Session, p *Partition) Holding {
	h := Holding{What: "an LVM physical volume"}
	if p.PV == nil || p.PV.disk == nil {
		h.NotRoot = "its LVM metadata cannot be read"
		if p.PV != nil && p.PV.Err != nil {
			h.NotRoot += fmt.Sprintf(" (%v)", p.PV.Err)
		}
		return h
	}
	h.What = "an LVM physical volume of volume group " + p.PV.VG
	h.NotRoot = "a PV holds LVs, not files: the root is looked for in its LVs"
	if len(p.PV.LVs) == 0 {
		h.Detail = append(h.Detail, "no LV")
	} else {
		h.Detail = append(h.Detail, "LVs "+strings.Join(p.PV.LVs, ", "))
	}
	for _, lv := range p.PV.LVs {
		if why, bad := p.PV.Unusable[lv]; bad {
			h.Detail = append(h.Detail, fmt.Sprintf("LV %s: not attached: %s", lv, why))
		}
	}
	return h
}

// attachLVs reads the LVM2 metadata of every PV among the attached
// partitions, in user space (package lvm), and attaches each visible
// linear LV as a loop device over the disk image at the LV's offset, with
// its size as limit: no device mapper, and no /dev/VG or /dev/mapper name
// on the host, so a host VG of the same name is never touched. An LV that
// is not one contiguous range (striped, raid, thin, cache, several
// segments) is recorded as unusable with why, and fails only an fstab
// entry that names it.
func (s *Session) attachLVs(ctx context.Context) error {
	pvs := []*Partition{}
	for _, p := range s.Parts {
		if p.FS.Type == lvmMember {
			pvs = append(pvs, p)
		}
	}
	for _, p := range pvs {
		p.PV = &PVInfo{Unusable: map[string]string{}}
		f, err := os.Open(p.Device)
		if err != nil {
			return fmt.Errorf("reading the LVM PV %s: %w", p, err)
		}
		disk, err := lvm.Read(f)
		f.Close()
		if err != nil {
			p.PV.Err = err
			s.logf("%s: LVM metadata not read: %v", p, err)
			continue
		}
		p.PV.disk, p.PV.VG = disk, disk.VG.Name
		vg := disk.VG
		for _, lv := range vg.LVs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !lv.Visible() {
				continue // a hidden part of another LV
			}
			p.PV.LVs = append(p.PV.LVs, lv.Name)
			ext, err := vg.Linear(lv)
			if err == nil && strings.ReplaceAll(ext.PV.ID, "-", "") != disk.Label.UUID {
				err = fmt.Errorf("LV %s/%s lies on another PV of its VG (%s), which this disk does not hold", vg.Name, lv.Name, ext.PV.Name)
			}
			if err == nil && ext.Offset(vg)+ext.Size(vg) > p.Size {
				err = fmt.Errorf("LV %s/%s ends past its PV's partition", vg.Name, lv.Name)
			}
			if err != nil {
				p.PV.Unusable[lv.Name] = err.Error()
				continue
			}
			info := &LVInfo{VG: vg.Name, Name: lv.Name, PV: p, Extents: ext}
			ap, err := s.attach(partition.Partition{Number: p.Number, Start: p.Start + ext.Offset(vg), Size: ext.Size(vg)})
			if err != nil {
				return fmt.Errorf("LV %s: %w", info, err)
			}
			ap.LV = info
			s.Parts = append(s.Parts, ap)
		}
	}
	return nil
}

// FreeSpans lists the byte ranges of the disk image (start, end) that the
// PV's free extents cover: no LV holds data there.
func (pv *PVInfo) FreeSpans(p *Partition) [][2]int64 {
	if pv == nil || pv.disk == nil {
		return nil
	}
	vg := pv.disk.VG
	mpv := vg.PVByID(pv.disk.Label.UUID)
	if mpv == nil {
		return nil
	}
	var out [][2]int64
	for _, r := range vg.FreeRanges(mpv) {
		start := p.Start + r.Offset(vg)
		out = append(out, [2]int64{start, min(start+r.Size(vg), p.End())})
	}
	return out
}

// lvByPath finds the attached LV an fstab device path names:
// /dev/mapper/VG-LV (dashes inside names doubled) or /dev/VG/LV. ok says
// whether the path names an LV of this disk's VGs at all (attached or not).
func (s *Session) lvByPath(path string) (p *Partition, vg, lv string, ok bool) {
	for _, pv := range s.Parts {
		if pv.PV == nil || pv.PV.disk == nil {
			continue
		}
		for _, name := range pv.PV.LVs {
			if path != "/dev/mapper/"+lvm.MapperName(pv.PV.VG, name) && path != "/dev/"+pv.PV.VG+"/"+name {
				continue
			}
			for _, q := range s.Parts {
				if q.LV != nil && q.LV.PV == pv && q.LV.Name == name {
					return q, pv.PV.VG, name, true
				}
			}
			return nil, pv.PV.VG, name, true
		}
	}
	return nil, "", "", false
}

// lvRefusal is the error for an fstab entry that names an LV of this disk
// that could not be attached, or nil.
func (s *Session) lvRefusal(e fstab.Entry) error {
	kind, value := e.Source()
	if kind != fstab.KindPath {
		return nil
	}
	p, vg, lv, ok := s.lvByPath(value)
	if !ok || p != nil {
		return nil
	}
	for _, pv := range s.Parts {
		if pv.PV != nil && pv.PV.VG == vg {
			if why, bad := pv.PV.Unusable[lv]; bad {
				return fmt.Errorf("fstab line %d mounts %s from %s: %s", e.Line, e.File, value, why)
			}
		}
	}
	return nil
}

// GrowLVM grows the PV on the grown partition p to fill it, then, when the
// root filesystem lies on an LV of that PV, that LV over the free extents
// that follow it, then the LV's filesystem (package lvm writes the new
// metadata; no lvm tool, no device mapper). It returns what it did, one
// line. A PV that gains no whole extent is left as it is.
func (s *Session) GrowLVM(ctx context.Context, p *Partition) (string, error) {
	if p.PV == nil || p.PV.disk == nil {
		return "", fmt.Errorf("%s is not an LVM PV whose metadata could be read", p)
	}
	root := s.Root
	if root == nil {
		var err error
		if root, err = s.FindRoot(ctx); err != nil {
			return "", err
		}
	}
	lvName := ""
	if root.LV != nil && root.LV.PV == p {
		lvName = root.LV.Name
	}
	disk := p.PV.disk
	vg := disk.VG
	if pv := vg.PVByID(disk.Label.UUID); pv != nil && (p.Size/lvm.SectorSize-pv.PEStart)/vg.ExtentSize <= pv.PECount {
		return fmt.Sprintf("The PV of VG %s already fills %s: nothing to grow", vg.Name, p), nil
	}
	f, err := os.OpenFile(p.Device, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	res, err := disk.Grow(f, p.Size, lvName)
	// The writes sit in the loop device's page cache: push them to the
	// image now, or they are lost when the autoclear loop device goes.
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("growing the LVM PV %s: %w", p, err)
	}
	msg := fmt.Sprintf("Grew the PV of VG %s from %d to %d extents", vg.Name, res.PECountBefore, res.PECountAfter)
	if lvName == "" {
		return msg + fmt.Sprintf("; the root filesystem (%s) is not on it, so no LV grew", root), nil
	}
	// The LV's loop device still has the old size limit: attach it anew.
	if err := s.reattachLV(root); err != nil {
		return "", err
	}
	if err := s.GrowFilesystem(ctx, root); err != nil {
		return "", fmt.Errorf("growing the filesystem of %s: %w", root, err)
	}
	return msg + fmt.Sprintf(", LV %s from %d to %d extents, and its %s filesystem", res.LV, res.LVBefore, res.LVAfter, root.FS.Type), nil
}

// reattachLV attaches p (an LV) again after its metadata changed: same
// offset, the new size.
func (s *Session) reattachLV(p *Partition) error {
	vg := p.LV.PV.PV.disk.VG
	ext, err := vg.Linear(vg.LV(p.LV.Name))
	if err != nil {
		return err
	}
	if err := s.opts.Journal.Release(p.handle); err != nil {
		return err
	}
	p.dev = nil
	dev, h, err := s.opts.Journal.AttachLoop(loop.AttachOpts{
		Backing:  s.opts.Disk,
		Offset:   p.LV.PV.Start + ext.Offset(vg),
		Size:     ext.Size(vg),
		ReadOnly: s.opts.ReadOnly,
	})
	if err != nil {
		return fmt.Errorf("attaching LV %s again after growing it: %w", p.LV, err)
	}
	p.dev, p.handle, p.Device = dev, h, dev.Path()
	p.Start, p.Size, p.LV.Extents = p.LV.PV.Start+ext.Offset(vg), ext.Size(vg), ext
	return nil
}

// lvmString is Partition.String for an LV, "" for others.
func (p *Partition) lvmString(what string) string {
	if p.LV == nil {
		return ""
	}
	return fmt.Sprintf("LV %s (%s, %s)", p.LV, p.Device, what)
}
