// Package session holds one disk image open for work: its partitions
// attached as loop devices, its root filesystem and the image's own fstab
// mounts beneath it, the chroot mounts, and the teardown of all of it. Every
// resource goes through the cleanup journal before it is taken.
//
// The builder's steps call the stages one by one; post-processors and the
// benchmarks call Open and Close.
package session

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// DefaultRootLabels are the labels cloud images give their root filesystem
// (Ubuntu and Debian cloud images, diskimage-builder).
var DefaultRootLabels = []string{"cloudimg-rootfs", "img-rootfs"}

// Options says which disk and how to hold it.
type Options struct {
	Disk     string           // the raw disk image file
	Journal  *cleanup.Journal // where every resource is recorded first
	ReadOnly bool             // attach and mount read-only

	RootPartition  int      // 1-based; 0 = find it
	RootLabels     []string // defaults to DefaultRootLabels
	MountPath      string   // where the root is mounted on the host
	MountOptions   []string // for the root filesystem
	RequiredMounts []string // fstab mount points that must mount
	FAT            FATMode  // FAT filesystems the kernel cannot mount; "" = FATPlaceholder

	Log func(string) // progress messages; may be nil
	// Warn gets warnings (each process left in the chroot, as it is
	// stopped); nil sends them to Log.
	Warn func(string)

	// NoDev mounts the image's own filesystems (root and fstab mounts)
	// nodev, for a session whose commands run in a chroot: a device node
	// in the image, aimed at a host disk, cannot be opened. Open sets it
	// with chroot.
	NoDev bool

	// Repro, when set, makes the kernel's writes reproducible: ext4 mounted
	// read-write gets its allocator tuned, and NormalizeWritten normalizes
	// it after the session is closed (repro.go).
	Repro *repro.Source
}

// Partition is one attached partition (Number 0: a whole-disk filesystem).
type Partition struct {
	partition.Partition
	Device string    // the loop device
	FS     mounts.FS // what blkid found on it; Type "" = nothing
	PV     *PVInfo   // an LVM2 PV: its VG and LVs
	LV     *LVInfo   // an LVM2 LV of a PV of this disk (Number is the PV's)

	dev    *loop.Device
	handle cleanup.Handle
	btrfs  *btrfsLook // what a look inside found, on btrfs
}

func (p *Partition) String() string {
	what := "no filesystem"
	if p.FS.Type != "" {
		what = p.FS.Type
		if p.FS.Label != "" {
			what += fmt.Sprintf(" labelled %q", p.FS.Label)
		}
	}
	if s := p.lvmString(what); s != "" {
		return s
	}
	name := fmt.Sprintf("partition %d", p.Number)
	if p.Number == 0 {
		name = "whole disk"
	}
	return fmt.Sprintf("%s (%s, %s)", name, p.Device, what)
}

// Session is a disk image held open.
type Session struct {
	opts  Options
	Table *partition.Table
	Parts []*Partition
	Root  *Partition

	stack     *mounts.Stack
	rootFS    *inroot.Root
	mountedAt map[*Partition]string // partition -> mount point on the host
	looked    map[*Partition]string // why FindRoot did not take a partition it looked at

	fats []*fatMount // FAT filesystems staged (fat.go)

	written []Partition // mounted read-write in a reproducible session (repro.go)

	chroot      cleanup.Handle
	chrootTaken bool
	sandbox     sandboxState // the chroot's namespaces (sandbox.go)

	// The mount path's directory, journaled when the session made it, so
	// that the reaper removes it after a kill too.
	mountDir      cleanup.Handle
	mountDirTaken bool
	// The mount path's directory, flock'd while the root is mounted there
	// (claim.go).
	mountLock *os.File
}

func (s *Session) logf(format string, a ...any) {
	if s.opts.Log != nil {
		s.opts.Log(fmt.Sprintf(format, a...))
	}
}

// journalAdapter records the mount stack's mounts in the cleanup journal.
type journalAdapter struct{ j *cleanup.Journal }

func (a journalAdapter) TakeMount(target, source, fstype string) (func() error, error) {
	h, err := a.j.Take(cleanup.MountEntry(target, source, fstype))
	if err != nil {
		return nil, err
	}
	return func() error { return a.j.Forget(h) }, nil
}

// Attach reads the disk's partition table in user space and attaches every
// partition as a loop device with offset and size limit; a disk without a
// table is attached whole. It fails, holding nothing, when the disk holds
// neither a partition table nor a filesystem.
func Attach(ctx context.Context, opts Options) (*Session, error) {
	if opts.Journal == nil {
		return nil, errors.New("session: no cleanup journal")
	}
	if len(opts.RootLabels) == 0 {
		opts.RootLabels = DefaultRootLabels
	}
	table, err := partition.Read(opts.Disk)
	if err != nil {
		return nil, err
	}
	s := &Session{opts: opts, Table: table, mountedAt: map[*Partition]string{}, looked: map[*Partition]string{}}

	parts := table.Partitions
	if table.Kind == partition.None {
		parts = []partition.Partition{{Number: 0, Start: 0, Size: table.DiskSize}}
	}
	for _, p := range parts {
		if err := ctx.Err(); err != nil {
			return nil, errors.Join(err, s.Detach())
		}
		if p.Size == 0 {
			continue
		}
		ap, err := s.attach(p)
		if err != nil {
			return nil, errors.Join(err, s.Detach())
		}
		s.Parts = append(s.Parts, ap)
	}
	if err := s.attachLVs(ctx); err != nil {
		return nil, errors.Join(err, s.Detach())
	}
	// An empty file has no partition at all to look at.
	if table.Kind == partition.None && (len(s.Parts) == 0 || s.Parts[0].FS.Type == "") {
		return nil, errors.Join(
			&NotADiskError{Disk: opts.Disk},
			s.Detach())
	}
	return s, nil
}

func (s *Session) attach(p partition.Partition) (*Partition, error) {
	dev, h, err := s.opts.Journal.AttachLoop(loop.AttachOpts{
		Backing:  s.opts.Disk,
		Offset:   p.Start,
		Size:     p.Size,
		ReadOnly: s.opts.ReadOnly,
	})
	if err != nil {
		return nil, fmt.Errorf("attaching partition %d: %w", p.Number, err)
	}
	ap := &Partition{Partition: p, Device: dev.Path(), dev: dev, handle: h}
	fs, err := mounts.Probe(ap.Device)
	if err != nil {
		s.Parts = append(s.Parts, ap) // so Detach releases it
		return nil, fmt.Errorf("probing partition %d: %w", p.Number, err)
	}
	ap.FS = fs
	return ap, nil
}

// Describe lists the partitions, one a line: what each holds and, when
// the builder cannot use it as the root, why (describe.go).
func (s *Session) Describe() string {
	var lines []string
	for _, p := range s.Parts {
		lines = append(lines, s.describe(p)...)
	}
	return strings.Join(lines, "\n")
}

// Partition returns the attached partition numbered n, or nil (never an
// LV, which carries its PV's number).
func (s *Session) Partition(n int) *Partition {
	for _, p := range s.Parts {
		if p.Number == n && p.LV == nil {
			return p
		}
	}
	return nil
}

// RootDevice is the root partition's loop device, once found.
func (s *Session) RootDevice() string {
	if s.Root == nil {
		return ""
	}
	return s.Root.Device
}

// MountPath is where the root filesystem is (or will be) mounted.
func (s *Session) MountPath() string { return s.opts.MountPath }

// RootFS gives confined access to the mounted root filesystem.
func (s *Session) RootFS() *inroot.Root { return s.rootFS }

// MountPointOf is where p is mounted on the host, or "".
func (s *Session) MountPointOf(p *Partition) string { return s.mountedAt[p] }

// Detach releases every loop device, newest first. Call Unmount first.
func (s *Session) Detach() error {
	var errs []error
	for i := len(s.Parts) - 1; i >= 0; i-- {
		p := s.Parts[i]
		if p.dev == nil {
			continue
		}
		errs = append(errs, s.opts.Journal.Release(p.handle))
		p.dev = nil
	}
	s.Parts = nil
	return errors.Join(errs...)
}

// Close undoes everything: chroot processes, mounts, loop devices.
func (s *Session) Close() error {
	return errors.Join(s.StopChrootProcesses(), s.Unmount(), s.Detach())
}

// Open attaches the disk, finds and mounts its root and its fstab mounts,
// and, with chroot, the chroot mounts: a session ready for work. On error
// it holds nothing.
func Open(ctx context.Context, opts Options, chroot bool) (*Session, error) {
	opts.NoDev = opts.NoDev || chroot
	s, err := Attach(ctx, opts)
	if err != nil {
		return nil, err
	}
	err = func() error {
		if _, err := s.FindRoot(ctx); err != nil {
			return err
		}
		if err := s.MountRoot(); err != nil {
			return err
		}
		if _, _, err := s.MountFstab(); err != nil {
			return err
		}
		if chroot {
			_, err := s.MountChroot(nil)
			return err
		}
		return nil
	}()
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// makeMountDir creates the mount path if missing, journaled first (the
// reaper removes it after a kill, once nothing is mounted in it); a
// directory that exists is the user's and is left as it is.
func (s *Session) makeMountDir() error {
	dir := s.opts.MountPath
	if _, err := os.Lstat(dir); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	h, err := s.opts.Journal.Take(cleanup.FileEntry(dir))
	if err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return errors.Join(err, s.opts.Journal.Forget(h))
	}
	s.mountDir, s.mountDirTaken = h, true
	return nil
}

// removeMountDir removes the mount path directory the session made (now
// empty: nothing is mounted there any more) and its journal entry.
func (s *Session) removeMountDir() error {
	if !s.mountDirTaken {
		return nil
	}
	s.mountDirTaken = false
	if err := os.Remove(s.opts.MountPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errors.Join(fmt.Errorf("removing the mount path %s: %w", s.opts.MountPath, err), s.opts.Journal.Forget(s.mountDir))
	}
	return s.opts.Journal.Forget(s.mountDir)
}

// NotADiskError is Attach's error for a file that holds neither a partition
// table nor a filesystem. A caller that attached a working copy names the
// user's file instead of Disk.
type NotADiskError struct{ Disk string }

func (e *NotADiskError) Error() string {
	return e.Disk + " is not a disk image: it holds neither a partition table (MBR or GPT) nor a filesystem"
}
