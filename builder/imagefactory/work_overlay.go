package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fuseexport"
)

// workOverlay is use_backing_file's working disk: a qcow2 overlay on the
// base image that receives every write of the build, shown to the loop
// devices (and to QEMU) as a raw file by a FUSE export. Nothing of the base
// is copied; the overlay becomes the artifact when the export is closed.
type workOverlay struct {
	path   string // the qcow2 overlay, hidden in the output directory
	view   string // the raw view over FUSE: the disk the other steps use
	handle cleanup.Handle
	export *fuseexport.Export
	closed bool
}

// openWorkOverlay makes the overlay on base (at least size bytes, 0 for the
// base's own size) and exports it. It returns fuseexport.ErrUnavailable,
// with nothing left behind, when this host has no FUSE export.
func openWorkOverlay(ctx context.Context, journal *cleanup.Journal, outDir, name, base string, baseFmt diskimage.Format, baseSize, size int64) (*workOverlay, error) {
	w := &workOverlay{path: filepath.Join(outDir, "."+name+".work.qcow2")}
	h, err := journal.Take(cleanup.FileEntry(w.path))
	if err != nil {
		return nil, err
	}
	w.handle = h
	fail := func(err error) (*workOverlay, error) { return nil, errors.Join(err, journal.Release(h)) }
	if err := diskimage.CreateOverlay(ctx, base, baseFmt, w.path); err != nil {
		return fail(err)
	}
	// disk_size: the overlay's virtual size grows; the partition and the
	// filesystem follow in the usual steps, on the view.
	if size > baseSize {
		if err := diskimage.ResizeQCOW2(ctx, w.path, size); err != nil {
			return fail(err)
		}
	}
	if w.export, err = fuseexport.Open(ctx, w.path, string(diskimage.QCOW2), journal); err != nil {
		return fail(err)
	}
	w.view = w.export.Path
	return w, nil
}

// finish ends the export, so every write is in the overlay, and renames
// the overlay to final. Release the loop devices on the view first.
func (w *workOverlay) finish(final string) error {
	if err := w.close(); err != nil {
		return err
	}
	if err := os.Rename(w.path, final); err != nil {
		return fmt.Errorf("naming the overlay %s: %w", final, err)
	}
	return nil
}

// close ends the export (idempotent).
func (w *workOverlay) close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	return w.export.Close()
}

// release ends the export if still open and removes the overlay unless
// finish renamed it: the working disk step's cleanup.
func (w *workOverlay) release(journal *cleanup.Journal) error {
	return errors.Join(w.close(), journal.Release(w.handle))
}
