// Package sparsify returns the free blocks of a raw disk image to holes, so
// that a copy or a conversion of the image carries only live data.
//
// Mountable filesystems (ext*, xfs, btrfs) are trimmed with FITRIM through
// their loop device: the loop driver turns each discard into a hole punched
// in the image file, and the filesystem alone knows which blocks are free.
// Swap areas keep their header and lose the rest. Space outside every
// partition is punched directly in the file. Everything else (vfat, which
// the kernel here cannot mount, and unknown contents) is left alone and
// reported.
//
// The trim's mount is a write: the kernel puts the clock in an ext4
// superblock (s_mtime at mount, s_wtime at unmount) and counts the mount,
// and puts a random transaction ID in xfs's unmount record. A reproducible
// build undoes both (settle); then two trims of the same ext4, xfs or btrfs
// give the same bytes, measured on Linux 6.18.
package sparsify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/session"
)

// Actions reported in PartResult.Action (besides "skipped: <reason>").
const (
	ActionTrimmed = "trimmed"
	ActionSwap    = "swap"
	ActionLVMPV   = "LVM PV: its LVs are trimmed in their own rows, its free extents punched"
	skippedPrefix = "skipped: "
)

// SwapHeaderKeep is how much of a swap area stays as it is: its header
// page. 64 KiB is the largest Linux page size, so a swap area made on a
// 64K-page machine (whose signature sits at the end of a 64 KiB page)
// keeps its signature too.
const SwapHeaderKeep = 64 << 10

// Result says what Trim did.
type Result struct {
	Before, After int64 // bytes allocated to the image file (st_blocks*512)
	Partitions    []PartResult
	Gaps          int64 // bytes outside every partition punched
}

// PartResult is what Trim did with one partition.
type PartResult struct {
	Number  int    // 1-based; 0 for a disk without partition table
	LV      string // "VG/LV" when the row is an LV of partition Number's PV
	FS      string // what blkid found; "" = nothing
	Action  string // "trimmed", "swap" or "skipped: <reason>"
	Trimmed int64  // bytes the filesystem discarded, or the swap bytes punched
}

// Skipped tells whether the partition was left alone.
func (p PartResult) Skipped() bool { return strings.HasPrefix(p.Action, skippedPrefix) }

// partDone is called with each partition's result as Trim goes (a test
// cancels Trim there, with every partition attached).
var partDone = func(PartResult) {}

// trimmable are the filesystems the kernel here mounts and trims.
var trimmable = map[string]bool{"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true}

// Trim punches every free block of the raw disk image disk: free space of
// its ext*, xfs and btrfs filesystems, its swap areas past their header,
// and space outside any partition (but never the area before the first
// partition, where boot loaders live, nor a GPT's backup header). Every
// loop device and mount goes through journal and is released before Trim
// returns. With src enabled, the bytes Trim leaves are a function of the
// image's (see settle). What it did is in the Result, for the caller to
// print once; log (may be nil) gets the session's own messages.
func Trim(ctx context.Context, disk string, journal *cleanup.Journal, src *repro.Source, log func(string)) (Result, error) {
	var res Result
	before, err := Allocated(disk)
	if err != nil {
		return res, err
	}
	res.Before = before

	s, err := session.Attach(ctx, session.Options{Disk: disk, Journal: journal, Log: log})
	if err != nil {
		return res, fmt.Errorf("sparsify %s: %w", disk, err)
	}
	var swaps []span // swap areas past their header, and PVs' free extents
	var later []span // ext filesystems to normalize in the file, once detached
	err = func() error {
		for _, p := range s.Parts {
			if err := ctx.Err(); err != nil {
				return err
			}
			pr := PartResult{Number: p.Number, FS: p.FS.Type}
			if p.LV != nil {
				pr.LV = p.LV.String()
			}
			switch {
			case p.PV != nil && p.PV.Err == nil:
				for _, f := range p.PV.FreeSpans(p) {
					swaps = append(swaps, span{f[0], f[1]})
					pr.Trimmed += f[1] - f[0]
				}
				pr.Action = ActionLVMPV
			case trimmable[p.FS.Type]:
				n, err := fitrim(p, journal)
				var me *mountError
				switch {
				case errors.As(err, &me):
					// A filesystem this kernel will not mount (a newer
					// feature, damage) is left as it is, not a failure.
					pr.Action = skippedPrefix + me.Error()
				case err != nil:
					return fmt.Errorf("sparsify %s: %w", disk, err)
				default:
					if src.Enabled() && ext4repro[p.FS.Type] && p.LV == nil {
						// Normalized in the file once detached (below): on
						// the loop device, zeroed free blocks would be
						// allocated ones.
						later = append(later, span{p.Start, p.End()})
					} else if err := settle(ctx, p.FS.Type, p.Device, src); err != nil {
						return fmt.Errorf("sparsify %s: %s: %w", disk, p, err)
					}
					pr.Action, pr.Trimmed = ActionTrimmed, n
				}
			case p.FS.Type == "swap":
				if p.Size > SwapHeaderKeep {
					swaps = append(swaps, span{p.Start + SwapHeaderKeep, p.End()})
					pr.Trimmed = p.Size - SwapHeaderKeep
				}
				pr.Action = ActionSwap
			case p.FS.Type == "":
				pr.Action = skippedPrefix + "no filesystem found"
			default:
				pr.Action = skippedPrefix + fmt.Sprintf("%s is not trimmed: only ext2/3/4, xfs and btrfs mount here, and swap", p.FS.Type)
			}
			res.Partitions = append(res.Partitions, pr)
			partDone(pr)
		}
		return nil
	}()
	table := s.Table
	// The swap areas and gaps are punched in the file only once no loop
	// device is left to cache their old content.
	if derr := s.Detach(); derr != nil || err != nil {
		return res, errors.Join(err, derr)
	}
	for _, l := range later {
		if err := settleExt(ext4Region(disk, l), src); err != nil {
			return res, fmt.Errorf("sparsify %s: the filesystem at byte %d: %w", disk, l.start, err)
		}
	}

	if err := ctx.Err(); err != nil {
		return res, err
	}
	gaps, err := freeSpans(disk, table)
	if err != nil {
		return res, err
	}
	for _, g := range gaps {
		res.Gaps += g.end - g.start
	}
	if err := punch(disk, append(swaps, gaps...)); err != nil {
		return res, err
	}
	if res.After, err = Allocated(disk); err != nil {
		return res, err
	}
	return res, nil
}

// Allocated is the space the file takes on its filesystem, in bytes.
func Allocated(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("sparsify: %w", &os.PathError{Op: "stat", Path: path, Err: err})
	}
	return st.Blocks * 512, nil
}

// fitrim mounts p at a private directory of its own, flushes it and asks
// it to discard all its free blocks; it returns the bytes discarded.
func fitrim(p *session.Partition, j *cleanup.Journal) (trimmed int64, err error) {
	dir, err := os.MkdirTemp("", "imagefactory-sparsify-")
	if err != nil {
		return 0, fmt.Errorf("trimming %s: %w", p, err)
	}
	dirH, err := j.Take(cleanup.FileEntry(dir))
	if err != nil {
		os.Remove(dir)
		return 0, err
	}
	defer func() { err = errors.Join(err, j.Release(dirH)) }()

	h, err := j.Take(cleanup.MountEntry(dir, p.Device, p.FS.Type))
	if err != nil {
		return 0, err
	}
	if err := unix.Mount(p.Device, dir, p.FS.Type, unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, mountData(p.FS.Type)); err != nil {
		merr := fmt.Errorf("mounting %s to trim it: %w", p, err)
		if ferr := j.Forget(h); ferr != nil {
			return 0, errors.Join(merr, ferr)
		}
		return 0, &mountError{merr}
	}
	defer func() { err = errors.Join(err, j.Release(h)) }()

	f, err := os.Open(dir)
	if err != nil {
		return 0, fmt.Errorf("trimming %s: %w", p, err)
	}
	defer f.Close()
	// Delayed allocations must land before the free space is known.
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return 0, fmt.Errorf("syncing %s mounted at %s: %w", p, dir, err)
	}
	r := fstrimRange{Start: 0, Len: ^uint64(0), Minlen: 0}
	if err := ioctlFITRIM(int(f.Fd()), &r); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return 0, fmt.Errorf("trimming %s: %s does not support discard (can the filesystem holding the image punch holes?): %w", p, p.Device, err)
		}
		return 0, fmt.Errorf("trimming %s mounted at %s (FITRIM): %w", p, dir, err)
	}
	return int64(r.Len), nil
}

// mountError is a filesystem the kernel refused to mount.
type mountError struct{ err error }

func (e *mountError) Error() string { return e.err.Error() }
func (e *mountError) Unwrap() error { return e.err }

// mountData are the mount options for a trim mount.
func mountData(fstype string) string {
	switch fstype {
	case "ext2", "ext3", "ext4":
		// Not zeroing the inode tables in the background: those writes
		// would allocate blocks again, and race with the unmount.
		return "noinit_itable"
	case "xfs":
		// Fixtures and copies of one base image share a UUID; xfs refuses
		// a second mount of the same UUID without this.
		return "nouuid"
	}
	return ""
}
