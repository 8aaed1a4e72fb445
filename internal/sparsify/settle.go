package sparsify

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	ext4 "github.com/imagefactory/packer-plugin-imagefactory/internal/ext4repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// settle undoes, for a reproducible build, what the trim's mount of the
// filesystem of type fstype on device wrote from the clock or randomness:
// ext2/3/4 superblock times and counters (settleExt), the xfs log
// (settleXFS). btrfs writes neither (measured: two trims give the same
// bytes). A nil src changes nothing.
func settle(ctx context.Context, fstype, device string, src *repro.Source) error {
	if !src.Enabled() {
		return nil
	}
	switch {
	case ext4repro[fstype]:
		return settleExt(ext4.Region{Path: device}, src)
	case fstype == "xfs":
		return settleXFS(ctx, device)
	}
	return nil
}

// settleXFS rewrites the clean log of the unmounted xfs on device as
// xfs_repair -L does (xfs_db's logformat, cycle 1): the kernel's unmount
// record carries a random transaction ID (fs/xfs/xfs_log.c,
// get_random_u32), xfsprogs' log records a fixed one.
func settleXFS(ctx context.Context, device string) error {
	out, err := exec.CommandContext(ctx, "xfs_db", "-x", "-c", "logformat", device).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Formatting the log") {
		return fmt.Errorf("rewriting the xfs log (xfs_db logformat): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// settleExt normalizes the unmounted ext2/3/4 filesystem in r with
// ext4repro.Normalize, as a reproducible build does after every mount that
// writes: the trim's mount put the clock in the superblock (s_mtime at
// mount, s_wtime at unmount, fs/ext4/super.c) and counted itself in the
// mount count, kilobytes written and the journal. Normalize also zeroes the
// free blocks, which the trim left as holes except where a discard
// covered only part of a qcow2 overlay's cluster.
//
// Trim gives it the disk file's bytes once the loop devices are gone, so
// free blocks become holes, not allocated zeros; an LV's filesystem, which
// has no place of its own in the file, goes through its loop device, whose
// page cache its detach does not write back while another descriptor holds
// it open: flushed here (measured: without it, the kernel's s_mtime
// stayed).
func settleExt(r ext4.Region, src *repro.Source) error {
	if _, err := ext4.Normalize(r, src); err != nil {
		return fmt.Errorf("normalizing the filesystem after its trim: %w", err)
	}
	f, err := os.OpenFile(r.Path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("flushing %s after normalizing it: %w", r.Path, err)
	}
	return f.Close()
}

// ext4repro are the filesystems ext4.Normalize takes.
var ext4repro = map[string]bool{"ext2": true, "ext3": true, "ext4": true}

// ext4Region is the filesystem in the bytes sp of the disk file.
func ext4Region(disk string, sp span) ext4.Region {
	return ext4.Region{Path: disk, Offset: sp.start, Size: sp.end - sp.start}
}
