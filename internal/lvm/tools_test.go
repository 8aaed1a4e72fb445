package lvm_test

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/lvm"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// attachPV attaches the fixture's PV partition; detached at cleanup.
func attachPV(t *testing.T, d fixture.LVMDiskInfo) *loop.Device {
	t.Helper()
	dev, err := loop.Attach(d.Path, d.PV.Offset, d.PV.Size, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Detach(); err != nil {
			t.Error(err)
		}
	})
	return dev
}

// TestToolsReadOurPV: the real lvm tools, under a private configuration,
// read the PV and VG this package writes (the fixture's, then grown) as we
// mean them; the host's LVM state does not change.
func TestToolsReadOurPV(t *testing.T) {
	d := fixture.LVMDisk(t)
	host := fixture.HostLVMState(t)
	dev := attachPV(t, d)
	l := fixture.NewPrivateLVM(t, dev.Path())

	lvs := func() string {
		return l.Run(t, "lvs", "--noheadings", "--separator", ":", "--units", "s", "--nosuffix",
			"-o", "lv_name,seg_start_pe,seg_size_pe,seg_pe_ranges", fixture.LVMVG)
	}
	want := []string{"var:0:8:" + dev.Path() + ":0-7", "var_log:0:8:" + dev.Path() + ":8-15", "home:0:8:" + dev.Path() + ":16-23",
		"tmp:0:8:" + dev.Path() + ":24-31", "root:0:80:" + dev.Path() + ":32-111"}
	got := strings.Fields(lvs())
	slices.Sort(got)
	slices.Sort(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("lvs:\n%s\nwant %v", strings.Join(got, "\n"), want)
	}
	l.Run(t, "vgck", fixture.LVMVG)
	l.Run(t, "pvck", dev.Path())

	// Grow the PV by 64 extents (the partition's loop device is attached
	// anew at the larger size) and root with it.
	if err := os.Truncate(d.Path, d.Size+256*fixture.MiB); err != nil {
		t.Fatal(err)
	}
	big, err := loop.Attach(d.Path, d.PV.Offset, d.PV.Size+256*fixture.MiB, false)
	if err != nil {
		t.Fatal(err)
	}
	defer big.Detach()
	f, err := os.OpenFile(big.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pv, err := lvm.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pv.Grow(f, d.PV.Size+256*fixture.MiB, "root"); err != nil {
		t.Fatal(err)
	}
	l2 := fixture.NewPrivateLVM(t, big.Path())
	out := l2.Run(t, "pvs", "--noheadings", "--separator", ":", "-o", "pv_name,vg_name,pv_pe_count,pv_pe_alloc_count,dev_size", "--units", "b", "--nosuffix")
	if got, want := strings.TrimSpace(out), big.Path()+":rhel:178:178:"+strconv.FormatInt(d.PV.Size+256*fixture.MiB, 10); got != want {
		t.Errorf("pvs after growth: %q, want %q", got, want)
	}
	out = l2.Run(t, "lvs", "--noheadings", "-o", "lv_name,seg_size_pe,vg_seqno", "rhel/root")
	if got := strings.Join(strings.Fields(out), " "); got != "root 146 2" {
		t.Errorf("lvs root after growth: %q", got)
	}
	l2.Run(t, "vgck", fixture.LVMVG)
	if after := fixture.HostLVMState(t); after != host {
		t.Errorf("the host's LVM state changed:\nbefore:\n%s\nafter:\n%s", host, after)
	}
}

// TestReadToolsPV: what pvcreate and vgcreate write (under a private
// configuration), package lvm reads.
func TestReadToolsPV(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	img := fixture.SparseFile(t, 64*fixture.MiB)
	dev, err := loop.Attach(img, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Detach()
	host := fixture.HostLVMState(t)
	l := fixture.NewPrivateLVM(t, dev.Path())
	l.Run(t, "pvcreate", "-y", "--uuid", "bZYScB-ytth-5y1V-8mlA-I8aV-6Nv1-SHY0fT", "--norestorefile", dev.Path())
	l.Run(t, "vgcreate", "-s", "4m", "my-vg", dev.Path())
	f, err := os.Open(dev.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pv, err := lvm.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	vg := pv.VG
	if vg.Name != "my-vg" || vg.ExtentSize != 8192 || len(vg.PVs) != 1 || vg.PVs[0].PEStart != 2048 || vg.PVs[0].PECount != 15 ||
		pv.Label.UUID != "bZYScBytth5y1V8mlAI8aV6Nv1SHY0fT" || pv.Label.DeviceSize != 64*fixture.MiB {
		t.Errorf("read %+v %+v %+v", pv.Label, vg, vg.PVs[0])
	}
	if after := fixture.HostLVMState(t); after != host {
		t.Errorf("the host's LVM state changed:\nbefore:\n%s\nafter:\n%s", host, after)
	}
}
