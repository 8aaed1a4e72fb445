package session

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/lvm"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
)

// TestLVMSession opens the RHEL/CIS-like disk: the LVs are attached at
// their offsets without device mapper, root is found on rhel/root, and every
// fstab mount (by /dev/mapper, /dev/VG/LV, UUID= and LABEL=) comes from its
// own LV.
func TestLVMSession(t *testing.T) {
	d := fixture.LVMDisk(t)
	hostBefore := fixture.HostLVMState(t)
	e := newEnv(t, d.Path)
	s, err := Open(context.Background(), e.opts, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	if s.Root == nil || s.Root.LV == nil || s.Root.LV.String() != "rhel/root" {
		t.Fatalf("root = %v, want LV rhel/root", s.Root)
	}
	desc := s.Describe()
	for _, want := range []string{
		"LVM2_member): Linux LVM, 460 MiB: an LVM physical volume of volume group rhel; not usable as the root: a PV holds LVs, not files",
		"\n      LVs var, var_log, home, tmp, root\n",
		"LV rhel/root (/dev/loop", "xfs): LV of volume group rhel, 320 MiB: an xfs filesystem",
		"LV rhel/var_log (/dev/loop",
	} {
		if !strings.Contains(desc, want) {
			t.Errorf("Describe lacks %q:\n%s", want, desc)
		}
	}
	for _, lv := range d.LVs {
		var p *Partition
		for _, q := range s.Parts {
			if q.LV != nil && q.LV.Name == lv.Name {
				p = q
			}
		}
		if p == nil {
			t.Fatalf("LV %s not attached:\n%s", lv.Name, desc)
		}
		if p.Start != lv.Offset || p.Size != lv.Size || p.FS.Type != lv.FS || p.FS.UUID != lv.UUID {
			t.Errorf("LV %s: start %d size %d %s %s, want %d %d %s %s", lv.Name, p.Start, p.Size, p.FS.Type, p.FS.UUID, lv.Offset, lv.Size, lv.FS, lv.UUID)
		}
		// The marker at the top of each LV's filesystem shows up at its mount point.
		got, err := os.ReadFile(filepath.Join(s.MountPath(), lv.Mountpoint, "fixture-lv-"+lv.Name))
		if err != nil || string(got) != "LV rhel/"+lv.Name+"\n" {
			t.Errorf("marker of %s at %s: %q %v", lv.Name, lv.Mountpoint, got, err)
		}
		if at := s.MountPointOf(p); at != filepath.Join(s.MountPath(), lv.Mountpoint) && !(lv.Mountpoint == "/" && at == s.MountPath()) {
			t.Errorf("LV %s mounted at %q", lv.Name, at)
		}
	}
	// /tmp's own filesystem is 1777 at its top, as the tree's /tmp was.
	if fi, err := os.Stat(filepath.Join(s.MountPath(), "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("/tmp (LV rhel/tmp): %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(s.MountPath(), "boot", fixture.BootMarkerFile)); err != nil {
		t.Errorf("/boot (xfs partition) not mounted: %v", err)
	}
	if p := s.Partition(3); p == nil || p.PV == nil || p.LV != nil {
		t.Errorf("Partition(3) = %v, want the PV", p)
	}
	if after := fixture.HostLVMState(t); after != hostBefore {
		t.Errorf("the host's LVM state changed:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
	}
}

// TestLVMRootPartitionIsPV: root_partition naming the PV says so.
func TestLVMRootPartitionIsPV(t *testing.T) {
	d := fixture.LVMDisk(t)
	e := newEnv(t, d.Path)
	e.opts.RootPartition = 3
	s := e.attach(t)
	_, err := s.FindRoot(context.Background())
	if err == nil || !strings.Contains(err.Error(), "root_partition 3 is an LVM PV") || !strings.Contains(err.Error(), "volume group rhel") {
		t.Fatalf("err = %v", err)
	}
}

// rewriteLV changes the fixture's metadata: lv gets the given segments text.
func rewriteLV(t *testing.T, d fixture.LVMDiskInfo, edit func(lvs []fixture.LVMLV) string) {
	t.Helper()
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	text := edit(append([]fixture.LVMLV(nil), d.LVs...))
	if err := lvm.Create(fixture.OffsetFile{File: f, Offset: d.PV.Offset}, fixture.LVMPVUUID, d.PV.Size, fixture.LVMPEStart, []byte(text)); err != nil {
		t.Fatal(err)
	}
}

// TestLVMUnusableLV: an LV in two non-contiguous segments is not attached,
// the PV's description says why, and the fstab entry naming it fails the
// mount with that reason.
func TestLVMUnusableLV(t *testing.T) {
	d := fixture.LVMDisk(t)
	rewriteLV(t, d, func(lvs []fixture.LVMLV) string {
		text := fixture.LVMMetadata(fixture.LVMVG, d.PV.Size, lvs)
		// home: 4 extents at 16, then 4 at 112 (after root): two segments.
		old := "segment_count = 1\n\nsegment1 {\nstart_extent = 0\nextent_count = 8\n\ntype = \"striped\"\nstripe_count = 1\n\nstripes = [\n\"pv0\", 16\n]\n}"
		if !strings.Contains(text, old) {
			t.Fatalf("fixture metadata changed shape:\n%s", text)
		}
		return strings.Replace(text, old, "segment_count = 2\nsegment1 {\nstart_extent = 0\nextent_count = 4\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 16]\n}\n"+
			"segment2 {\nstart_extent = 4\nextent_count = 2\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 112]\n}", 1)
	})
	e := newEnv(t, d.Path)
	a := e.attach(t)
	if want := "LV home: not attached: LV rhel/home has 2 segments"; !strings.Contains(a.Describe(), want) {
		t.Errorf("Describe lacks %q:\n%s", want, a.Describe())
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), e.opts, false)
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded with /home on a two-segment LV")
	}
	for _, want := range []string{"fstab line", "/home", "/dev/rhel/home", "LV rhel/home has 2 segments that are not one contiguous range"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestLVMGrow: disk_size's path on the LVM disk: the last partition (the
// PV) grows, then GrowLVM grows the PV, root's LV and its xfs.
func TestLVMGrow(t *testing.T) {
	d := fixture.LVMDisk(t)
	const grow = 256 * fixture.MiB
	if err := diskimage.Grow(d.Path, d.Size+grow); err != nil {
		t.Fatal(err)
	}
	if _, err := partition.GrowLast(d.Path); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, d.Path)
	s := e.attach(t)
	pv := s.Partition(3)
	pvSize := pv.Size
	msg, err := s.GrowLVM(context.Background(), pv)
	if err != nil {
		t.Fatal(err)
	}
	// 114 extents + 64 new; root (80 at 32) takes all free: 2 + 64.
	if want := "Grew the PV of VG rhel from 114 to 178 extents, LV rhel/root from 80 to 146 extents, and its xfs filesystem"; msg != want {
		t.Errorf("msg = %q, want %q", msg, want)
	}
	if s.Root.Size != 146*fixture.LVMExtentSize {
		t.Errorf("root LV size %d after growth", s.Root.Size)
	}
	// A second call finds nothing to do.
	if msg, err := s.GrowLVM(context.Background(), pv); err != nil || !strings.Contains(msg, "nothing to grow") {
		t.Errorf("second GrowLVM: %q %v", msg, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The image file itself holds the new metadata.
	f, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pvd, err := lvm.Read(fixture.OffsetFile{File: f, Offset: d.PV.Offset})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := pvd.VG.Linear(pvd.VG.LV("root"))
	if err != nil || ext.Count != 146 || pvd.VG.Seqno != 2 || pvd.Label.DeviceSize != uint64(pvSize) {
		t.Fatalf("the image's metadata after growth: root %+v %v, seqno %d, PV size %d", ext, err, pvd.VG.Seqno, pvd.Label.DeviceSize)
	}
	root := d.LV("root").Partition
	root.Size = ext.Size(pvd.VG)
	fixture.FsckPartition(t, d.Path, root)
}

// TestLVMGrowRefused: when another LV follows root on the PV, disk_size
// cannot grow root: one refusal naming the LV, and the image's metadata is
// not rewritten.
func TestLVMGrowRefused(t *testing.T) {
	d := fixture.LVMDisk(t)
	rewriteLV(t, d, func(lvs []fixture.LVMLV) string {
		// swap takes the two extents after root.
		lvs = append(lvs, fixture.LVMLV{Name: "swap", StartPE: 112, Count: 2})
		return fixture.LVMMetadata(fixture.LVMVG, d.PV.Size, lvs)
	})
	if err := diskimage.Grow(d.Path, d.Size+64*fixture.MiB); err != nil {
		t.Fatal(err)
	}
	if _, err := partition.GrowLast(d.Path); err != nil {
		t.Fatal(err)
	}
	before := fixture.Sha256(t, d.Path)
	e := newEnv(t, d.Path)
	s := e.attach(t)
	if !strings.Contains(s.Describe(), "LVs var, var_log, home, tmp, root, swap") {
		t.Errorf("Describe:\n%s", s.Describe())
	}
	_, err := s.GrowLVM(context.Background(), s.Partition(3))
	want := "LV rhel/root cannot grow: no free extent follows it on its PV"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fixture.Sha256(t, d.Path) != before {
		t.Error("the refused growth wrote to the image")
	}
}
