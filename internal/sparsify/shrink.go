package sparsify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fsresize"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/session"
)

// alignment is where a shrunk disk ends: partitioning tools and clouds
// expect whole MiB.
const alignment = 1 << 20

// gptBackup is what a GPT keeps after its last usable sector: 32 sectors
// of entries and the backup header.
const gptBackup = 33 * partition.SectorSize

// ShrinkOptions says what Shrink keeps.
type ShrinkOptions struct {
	FreeSpace     int64 // bytes of room left in the root filesystem
	RootPartition int   // 1-based; 0 = find it as the builder does
	// Repro, when enabled, puts the build's epoch instead of the clock in
	// what e2fsck and resize2fs write. The GPT rewrite keeps every GUID and
	// is a function of the table and the new size already.
	Repro *repro.Source
}

// ShrinkResult says what Shrink did.
type ShrinkResult struct {
	Partition             int    // the root partition (0: whole-disk filesystem)
	FS                    string // its filesystem type
	FSBefore, FSAfter     int64  // filesystem size in bytes
	DiskBefore, DiskAfter int64  // image file size in bytes
}

// Shrink makes the root filesystem of the raw disk image disk just large
// enough for its files plus FreeSpace, moves the end of its partition (which
// must be the last one) and the GPT backup to match, and truncates the file:
// diskimage-builder's sizing, done after the fact. ext2/3/4 shrink
// unmounted; btrfs (one device) mounted, not under fsresize.BtrfsMinSize;
// xfs cannot shrink at all. Nothing is changed when the
// filesystem cannot shrink or is not the last partition; every loop device
// goes through journal and is released before Shrink returns.
func Shrink(ctx context.Context, disk string, journal *cleanup.Journal, opts ShrinkOptions, log func(string)) (ShrinkResult, error) {
	res := ShrinkResult{}
	fi, err := os.Stat(disk)
	if err != nil {
		return res, fmt.Errorf("shrink: %w", err)
	}
	res.DiskBefore, res.DiskAfter = fi.Size(), fi.Size()

	// A btrfs shrinks only mounted: its mount point goes here.
	work, err := os.MkdirTemp("", "imagefactory-shrink-")
	if err != nil {
		return res, fmt.Errorf("shrink: %w", err)
	}
	workH, err := journal.Take(cleanup.FileEntry(work))
	if err != nil {
		os.Remove(work)
		return res, err
	}
	defer func() { journal.Release(workH) }()

	s, err := session.Attach(ctx, session.Options{Disk: disk, Journal: journal, RootPartition: opts.RootPartition,
		MountPath: filepath.Join(work, "root"), Log: log})
	if err != nil {
		return res, fmt.Errorf("shrink %s: %w", disk, err)
	}
	root, err := shrinkRoot(ctx, s, opts)
	if root != nil {
		res.Partition, res.FS = root.Number, root.FS.Type
	}
	if err == nil {
		res.FSBefore, res.FSAfter, err = shrinkFS(ctx, s, root, opts.FreeSpace, opts.Repro)
		if err != nil {
			err = fmt.Errorf("shrink %s: %s: %w", disk, root, err)
		}
	}
	if derr := s.Detach(); err != nil || derr != nil {
		return res, errors.Join(err, derr)
	}
	if res.FSAfter == res.FSBefore {
		return res, nil
	}

	end := root.Start + res.FSAfter
	switch s.Table.Kind {
	case partition.None:
		err = os.Truncate(disk, alignUp(end))
	case partition.GPT:
		_, err = partition.ShrinkLast(disk, alignUp(end+gptBackup), res.FSAfter)
	default:
		_, err = partition.ShrinkLast(disk, alignUp(end), res.FSAfter)
	}
	if err != nil {
		return res, fmt.Errorf("shrink %s: the filesystem shrank to %d bytes, but the disk did not follow: %w", disk, res.FSAfter, err)
	}
	if fi, err = os.Stat(disk); err != nil {
		return res, fmt.Errorf("shrink: %w", err)
	}
	res.DiskAfter = fi.Size()
	return res, nil
}

// shrinkRoot finds the root filesystem and checks that shrinking it can
// shrink the disk.
func shrinkRoot(ctx context.Context, s *session.Session, opts ShrinkOptions) (*session.Partition, error) {
	root, err := s.FindRoot(ctx)
	if err != nil {
		return nil, err
	}
	if root.LV != nil {
		return root, fmt.Errorf("the root filesystem, %s, is on an LVM LV: shrinking an LV and its PV is not handled", root)
	}
	switch root.FS.Type {
	case "ext2", "ext3", "ext4", "btrfs":
	default:
		return root, fmt.Errorf("the root filesystem, %s, cannot shrink: only ext2/3/4 and btrfs can (xfs never shrinks)", root)
	}
	for _, p := range s.Table.Partitions {
		if p.End() > root.End() {
			return root, fmt.Errorf("the root filesystem, %s, is not the last partition (partition %d ends after it): only the last one can give its space back", root, p.Number)
		}
	}
	return root, nil
}

func alignUp(n int64) int64 { return (n + alignment - 1) / alignment * alignment }

// shrinkFS shrinks the root filesystem and returns its sizes before and
// after, in bytes: ext2/3/4 unmounted, btrfs on a plain mount of its own
// (every subvolume moves with the filesystem).
func shrinkFS(ctx context.Context, s *session.Session, root *session.Partition, free int64, src *repro.Source) (before, after int64, err error) {
	if root.FS.Type == "btrfs" {
		err = s.WithPlainMount(root, "shrink", func(dir string) error {
			before, after, err = fsresize.ShrinkBtrfs(ctx, dir, free)
			return err
		})
		return before, after, err
	}
	b, a, err := fsresize.ShrinkExt(ctx, root.Device, free, src)
	return b.Bytes(), a.Bytes(), err
}
