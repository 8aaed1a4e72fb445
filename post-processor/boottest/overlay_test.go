package boottest_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fuseexport"
)

// editedOverlay makes dst, a qcow2 overlay on base, and calls edit with
// its root filesystem (the last partition) mounted read-write: an image
// derived from another for the cost of what edit changes; base is never
// written. The loop device, the mount and the overlay's FUSE view are gone
// when it returns. (Here, not in internal/fixture: fuseexport's own tests
// import the fixture.)
func editedOverlay(t *testing.T, base, dst string, edit func(root string)) {
	t.Helper()
	ctx := context.Background()
	format, err := diskimage.Detect(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := diskimage.CreateOverlay(ctx, base, format, dst); err != nil {
		t.Fatal(err)
	}
	j, err := cleanup.Open(t.TempDir(), "test overlay "+filepath.Base(dst))
	if err != nil {
		t.Fatal(err)
	}
	exp, err := fuseexport.Open(ctx, dst, string(diskimage.QCOW2), j)
	if err != nil {
		t.Fatal(errors.Join(err, j.Close()))
	}
	defer func() {
		if err := errors.Join(exp.Close(), j.Close()); err != nil {
			t.Errorf("closing the view of %s: %v", dst, err)
		}
	}()
	tab, err := fixture.ReadTable(t, exp.Path)
	if err != nil || len(tab.PartitionTable.Partitions) == 0 {
		t.Fatalf("no partition table in %s: %v", base, err)
	}
	parts := tab.PartitionTable.Partitions
	last := parts[len(parts)-1]
	ss := tab.PartitionTable.SectorSize
	root := fixture.Partition{Offset: last.Start * ss, Size: last.Size * ss}
	out, err := exec.Command("blkid", "-p", "-O", strconv.FormatInt(root.Offset, 10), "-s", "TYPE", "-o", "value", exp.Path).Output()
	if root.FS = strings.TrimSpace(string(out)); err != nil || root.FS == "" {
		t.Fatalf("no filesystem on the last partition of %s: %v", base, err)
	}
	fixture.WithReadWriteMount(t, exp.Path, root, edit)
}
