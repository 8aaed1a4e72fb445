package sparsify

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/sparsify"
)

// The trim's lines, golden: each partition once (the example printed each
// twice, the trim's own line and this summary), no empty parentheses for a
// partition without a filesystem (it printed "partition 1 ():"), sizes
// with units (it printed "trimmed 943316992 bytes").
func TestTrimLines(t *testing.T) {
	for _, tt := range []struct {
		name string
		res  sparsify.Result
		want []string
	}{
		{"the example's disk", sparsify.Result{Partitions: []sparsify.PartResult{
			{Number: 1, Action: "skipped: no filesystem found"},
			{Number: 2, FS: "vfat", Action: "skipped: vfat is not trimmed: only ext2/3/4, xfs and btrfs mount here, and swap"},
			{Number: 3, FS: "ext4", Action: sparsify.ActionTrimmed, Trimmed: 943316992},
		}}, []string{
			"Trimmed the free space in 0.300s:",
			"  partition 1: skipped: no filesystem found",
			"  partition 2 (vfat): skipped: vfat is not trimmed: only ext2/3/4, xfs and btrfs mount here, and swap",
			"  partition 3 (ext4): trimmed 899.62 MiB of free space",
		}},
		{"swap, an LV and a gap", sparsify.Result{Gaps: 1 << 20, Partitions: []sparsify.PartResult{
			{Number: 1, FS: "swap", Action: sparsify.ActionSwap, Trimmed: 8<<20 - sparsify.SwapHeaderKeep},
			{Number: 2, FS: "LVM2_member", Action: sparsify.ActionLVMPV, Trimmed: 4 << 20},
			{Number: 2, LV: "rhel/root", FS: "xfs", Action: sparsify.ActionTrimmed, Trimmed: 0},
		}}, []string{
			"Trimmed the free space in 0.300s:",
			"  partition 1 (swap): swap: 7.94 MiB punched past its header",
			"  partition 2 (LVM2_member): " + sparsify.ActionLVMPV,
			"  LV rhel/root (xfs): trimmed 0 B of free space",
			"  outside the partitions: 1 MiB punched",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := trimLines(tt.res, 300*time.Millisecond)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("trimLines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			for _, l := range got {
				if strings.Contains(l, "()") || strings.Contains(l, "bytes") {
					t.Errorf("%q: empty parentheses or a bare byte count", l)
				}
			}
		})
	}
}
