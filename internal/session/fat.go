package session

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fatstage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
)

// FATMode says what becomes of an fstab entry of a FAT filesystem (an ESP
// on /boot/efi, a Raspberry Pi firmware partition on /boot/firmware) that
// the kernel cannot mount.
type FATMode string

const (
	// FATPlaceholder: skipped, with an empty read-only placeholder there
	// (the default of a session: nothing is written back unless asked).
	FATPlaceholder FATMode = "placeholder"
	// FATStaged: its files are copied into a tmpfs mounted there
	// (internal/fatstage), and WriteBackFAT writes what changed back.
	FATStaged FATMode = "staged"
)

// fatMount is one FAT filesystem staged at an fstab mount point.
type fatMount struct {
	entry fstab.Entry
	part  *Partition
	host  string // the tmpfs mount point on the host
	stage *fatstage.Stage
	done  bool
}

// unmountable is the mount stack's hook for fstab entries the kernel
// cannot mount: with FATStaged, a FAT mtools can read is staged.
func (s *Session) unmountable(e fstab.Entry, dev, fstype string) (bool, string, error) {
	if !fatstage.Types[fstype] || s.opts.FAT != FATStaged || s.opts.ReadOnly {
		return false, "", nil
	}
	var part *Partition
	for _, p := range s.Parts {
		if p.Device == dev {
			part = p
		}
	}
	if part == nil {
		return false, "", nil
	}
	ctx := context.Background()
	if err := fatstage.Readable(ctx, dev); err != nil {
		return false, fmt.Sprintf("and mtools cannot read it either (%v), so it cannot be staged", err), nil
	}
	perms, err := fatstage.PermsFromOptions(e.Options)
	if err != nil {
		return false, "", err
	}
	host, err := s.stack.MountStage(e.File, part.Size, 0o777&^perms.DMask, perms.UID, perms.GID)
	if err != nil {
		return false, "", fmt.Errorf("a tmpfs to stage the FAT filesystem of %s: %w", part, err)
	}
	st, err := s.withMountDir(host, func(dir string) (*fatstage.Stage, error) {
		return fatstage.Extract(ctx, dev, dir, perms)
	})
	if err != nil {
		return false, "", fmt.Errorf("staging the FAT filesystem of %s: %w", part, err)
	}
	st.Repro = s.opts.Repro // the write-back's times (fatstage.Stage.Repro)
	if ok, out := st.Clean(); !ok {
		s.logf("warning: fsck.fat -n finds the FAT filesystem of %s (%s) not clean before the build, so the write-back is not checked:\n%s", part, e.File, out)
	}
	s.fats = append(s.fats, &fatMount{entry: e, part: part, host: host, stage: st})
	return true, "", nil
}

// staged reports whether the fstab mount point file is a staged FAT.
func (s *Session) staged(file string) bool {
	for _, fm := range s.fats {
		if fm.entry.File == file {
			return true
		}
	}
	return false
}

// withMountDir calls f with a path to the stack's mount at host that
// reaches it through a file descriptor resolved inside the image root, so
// that a directory of the image renamed or replaced by a symlink cannot
// lead elsewhere. The path is /proc/PID/fd/N: mtools, a child process,
// opens files below it too.
func (s *Session) withMountDir(host string, f func(dir string) (*fatstage.Stage, error)) (*fatstage.Stage, error) {
	fd, err := s.stack.OpenMount(host)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	return f(fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd.Fd()))
}

// WriteBackFAT writes what changed in the staged FAT filesystems back to
// their partitions (internal/fatstage), once the chroot's processes are
// stopped and before Unmount; a FAT already written back is not written
// again. It returns one line per filesystem for the UI. An error names
// the mount point and what a FAT cannot hold.
func (s *Session) WriteBackFAT(ctx context.Context) ([]string, error) {
	var lines []string
	var errs []error
	for _, fm := range s.fats {
		if fm.done {
			continue
		}
		fm.done = true
		var c fatstage.Changes
		_, err := s.withMountDir(fm.host, func(dir string) (*fatstage.Stage, error) {
			fm.stage.Dir = dir
			var err error
			c, err = fm.stage.WriteBack(ctx)
			return nil, err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("writing %s back to %s: %w", fm.entry.File, fm.part, err))
			continue
		}
		lines = append(lines, fmt.Sprintf("%s (FAT on %s): %s", fm.entry.File, fm.part, c))
	}
	return lines, errors.Join(errs...)
}
