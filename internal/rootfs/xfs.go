package rootfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
)

// MakeXFS makes an xfs filesystem of size bytes at offset in the disk file
// and fills it from tree: the range is attached to a loop device, made,
// mounted at mountDir (created and removed here) and filled with cp -a,
// which keeps owners, modes, hard links, device nodes, ACLs and xattrs.
// Everything it holds goes through the journal and is released before it
// returns.
func MakeXFS(ctx context.Context, j *cleanup.Journal, disk string, offset, size int64, tree, mountDir string, s Spec) (err error) {
	if size < MinXFSSize {
		return fmt.Errorf("%w: xfs needs at least %d MiB, the root partition has %d MiB", ErrNoSpace, MinXFSSize/mib, size/mib)
	}
	dev, lh, err := j.AttachLoop(loop.AttachOpts{Backing: disk, Offset: offset, Size: size})
	if err != nil {
		return fmt.Errorf("attaching the root partition: %w", err)
	}
	defer func() { err = errors.Join(err, j.Release(lh)) }()
	if err := run(ctx, "mkfs.xfs", "-q", "-f", "-K", "-L", s.Label, "-m", "uuid="+s.UUID, dev.Path()); err != nil {
		return fmt.Errorf("making the xfs root filesystem: %w", err)
	}

	dh, err := j.Take(cleanup.FileEntry(mountDir))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, j.Release(dh)) }()
	if err := os.MkdirAll(mountDir, 0o700); err != nil {
		return err
	}
	mh, err := j.Take(cleanup.MountEntry(mountDir, dev.Path(), "xfs"))
	if err != nil {
		return err
	}
	// nouuid: a root made from an xfs filesystem image keeps its UUID,
	// and xfs refuses to mount a second filesystem with the UUID of one
	// mounted (the image, read-only, while it is copied).
	if err := unix.Mount(dev.Path(), mountDir, "xfs", unix.MS_NOSUID|unix.MS_NODEV, "nouuid"); err != nil {
		return errors.Join(fmt.Errorf("mounting the new xfs root filesystem: %w", err), j.Forget(mh))
	}
	defer func() { err = errors.Join(err, j.Release(mh)) }()
	if err := run(ctx, "cp", "-a", "--sparse=always", tree+"/.", mountDir+"/"); err != nil {
		if strings.Contains(err.Error(), "No space left") {
			return fmt.Errorf("%w (xfs of %d MiB): %v", ErrNoSpace, size/mib, err)
		}
		return fmt.Errorf("copying the root tree into the xfs filesystem: %w", err)
	}
	return nil
}
