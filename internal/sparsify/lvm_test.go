package sparsify

import (
	"context"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestTrimLVM: on the RHEL/CIS-like disk every LV's filesystem is trimmed
// in a row of its own, the PV's free extents are punched, and the LVs'
// filesystems stay clean.
func TestTrimLVM(t *testing.T) {
	requireRoot(t, "losetup", "mount", "umount")
	d := fixture.LVMDisk(t)
	j, _ := setup(t)
	// The PV's two free extents (112-113) hold old data; root's filesystem
	// holds deleted data.
	free := region{d.PV.Offset + fixture.LVMPEStart + 112*fixture.LVMExtentSize, d.PV.Offset + fixture.LVMPEStart + 114*fixture.LVMExtentSize}
	fillRandom(t, d.Path, free)
	root := d.LV("root").Partition
	dirty(t, d.Path, root)
	before := allocated(t, d.Path)
	res, err := Trim(context.Background(), d.Path, j, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]PartResult{}
	for _, pr := range res.Partitions {
		rows[pr.LV] = pr
	}
	for _, lv := range d.LVs {
		pr, ok := rows["rhel/"+lv.Name]
		if !ok || pr.Action != ActionTrimmed || pr.Number != 3 || pr.FS != lv.FS {
			t.Errorf("LV %s: %+v (rows %+v)", lv.Name, pr, res.Partitions)
		}
	}
	var pvRow *PartResult
	for i, pr := range res.Partitions {
		if pr.Number == 3 && pr.LV == "" {
			pvRow = &res.Partitions[i]
		}
	}
	if pvRow == nil || pvRow.Action != ActionLVMPV || pvRow.Trimmed != 2*fixture.LVMExtentSize {
		t.Errorf("the PV's row: %+v", pvRow)
	}
	if hasData(t, d.Path, free) {
		t.Error("the PV's free extents still hold data")
	}
	if after := allocated(t, d.Path); after > before-90*MiB {
		t.Errorf("allocated %d -> %d bytes: the root LV's deleted 100 MiB were not given back", before, after)
	}
	for _, lv := range d.LVs {
		fixture.FsckPartition(t, d.Path, lv.Partition)
	}
}
