package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/ext4repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fsresize"
)

// GrowFilesystem grows p's filesystem to fill its grown partition, before
// the image is mounted for work. ext2/3/4 grow offline: online growth needs
// CAP_SYS_RESOURCE, which containers (and CI here) often lack. xfs and btrfs
// grow only mounted, so they get a short plain mount of their own: under
// the work mount's private fence, xfs_growfs would find the fence's source
// device instead of the loop device.
func (s *Session) GrowFilesystem(ctx context.Context, p *Partition) error {
	switch p.FS.Type {
	case "xfs", "btrfs":
	default:
		return fsresize.Grow(ctx, p.FS.Type, p.Device, "")
	}
	return s.WithPlainMount(p, "grow", func(dir string) error {
		return fsresize.Grow(ctx, p.FS.Type, p.Device, dir)
	})
}

// WithPlainMount mounts p read-write (nodev, nosuid, noexec; btrfs: its
// default subvolume) on a fresh directory next to mount_path, journaled,
// calls f with the directory, and unmounts: for tools that work only on a
// mounted filesystem (xfs_growfs, btrfs filesystem resize). why names the
// purpose in messages ("grow").
func (s *Session) WithPlainMount(p *Partition, why string, f func(dir string) error) error {
	if err := os.MkdirAll(filepath.Dir(s.opts.MountPath), 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(filepath.Dir(s.opts.MountPath), why+"-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	h, err := s.opts.Journal.Take(cleanup.MountEntry(dir, p.Device, p.FS.Type))
	if err != nil {
		return err
	}
	data := ""
	if s.reproducible() {
		data = ext4repro.MountData(p.FS.Type)
	}
	if err := unix.Mount(p.Device, dir, p.FS.Type, unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, data); err != nil {
		return errors.Join(fmt.Errorf("mounting %s to %s it: %w", p, why, err), s.opts.Journal.Forget(h))
	}
	if err := s.wrote(p); err != nil {
		return errors.Join(err, s.opts.Journal.Release(h))
	}
	return errors.Join(f(dir), s.opts.Journal.Release(h))
}
