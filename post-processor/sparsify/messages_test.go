package sparsify

import (
	"strings"
	"testing"
)

// The trim's line per partition: no empty parentheses for a partition
// without a filesystem (the example's BIOS boot partition printed
// "partition 1 ():").
func TestPartitionLine(t *testing.T) {
	for _, tt := range []struct {
		number     int
		fs, action string
		want       string
	}{
		{1, "", "skipped", "  partition 1: skipped"},
		{3, "ext4", "trimmed", "  partition 3 (ext4): trimmed"},
	} {
		got := partitionLine(tt.number, tt.fs, tt.action)
		if got != tt.want || strings.Contains(got, "()") {
			t.Errorf("partitionLine(%d, %q, %q) = %q, want %q", tt.number, tt.fs, tt.action, got, tt.want)
		}
	}
}
