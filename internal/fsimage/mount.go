package fsimage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
)

// Mounted is a filesystem image mounted read-only by Mount.
type Mounted struct {
	Dir     string // the mount point: the image's root directory
	j       *cleanup.Journal
	handles []cleanup.Handle // in the order taken
}

// Close unmounts, detaches and removes the mount point, newest first.
func (m *Mounted) Close() error {
	var errs []error
	for i := len(m.handles) - 1; i >= 0; i-- {
		if err := m.j.Release(m.handles[i]); err != nil {
			errs = append(errs, err)
		}
	}
	m.handles = nil
	return errors.Join(errs...)
}

// mountData is the filesystem-specific option that keeps a journal from
// being replayed: on a read-only mount of a filesystem that was not
// cleanly unmounted Linux would otherwise replay it, writing through the
// device (ext4(5): noload; xfs(5): norecovery).
func mountData(fstype string) (kernelType, data string) {
	if fstype == XFS {
		return XFS, "norecovery"
	}
	return Ext4, "noload" // the ext4 driver mounts ext2 and ext3 too
}

// Mount attaches the image at path to a read-only loop device and mounts
// it read-only (nosuid, nodev, noexec, its journal not replayed) on dir,
// which it creates (its parent too) and which must not exist. Nothing can
// write to the file through it: the file is opened O_RDONLY (so it may
// lie on read-only media) and the loop device refuses writes. Every
// resource is journaled before it is taken; on error what was taken is
// released. Errors do not name path: the caller names the user's file.
func Mount(j *cleanup.Journal, path string, info Info, dir string) (_ *Mounted, err error) {
	m := &Mounted{Dir: dir, j: j}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Close())
		}
	}()
	dev, lh, err := j.AttachLoop(loop.AttachOpts{Backing: path, Size: info.Size, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("attaching the image read-only: %w", err)
	}
	m.handles = append(m.handles, lh)
	dh, err := j.Take(cleanup.FileEntry(dir))
	if err != nil {
		return nil, err
	}
	m.handles = append(m.handles, dh)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	kernelType, data := mountData(info.Type)
	mh, err := j.Take(cleanup.MountEntry(dir, dev.Path(), kernelType))
	if err != nil {
		return nil, err
	}
	flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount(dev.Path(), dir, kernelType, flags, data); err != nil {
		return nil, errors.Join(fmt.Errorf("mounting its %s filesystem read-only (-o ro,%s): %w; the kernel's log (dmesg) says why", info.Type, data, err), j.Forget(mh))
	}
	m.handles = append(m.handles, mh)
	return m, nil
}
