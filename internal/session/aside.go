package session

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// asideSuffix names a file of the image while it is moved aside (the
// suffix chrootprep uses for the files it swaps).
const asideSuffix = ".imagefactory-orig"

// MoveAside renames the image's file name (a path inside the image, such as
// /etc/ld.so.preload) to name + ".imagefactory-orig" for the session, and
// returns the function that puts it back. A rename keeps the inode: the
// file comes back with its bytes, mode, owner, times and xattrs, and a
// symlink comes back as the symlink (it is never followed; both names are
// resolved inside the image). The move is journaled first (a
// cleanup.KindMoved entry), so if the build is killed, the next build's
// reaper puts the file back before it unmounts the image. moved is false,
// and restore a no-op, when the image has no such file.
func (s *Session) MoveAside(name string) (restore func() error, moved bool, err error) {
	nothing := func() error { return nil }
	if s.rootFS == nil {
		return nil, false, errors.New("the root filesystem is not mounted")
	}
	aside := name + asideSuffix
	fi, err := s.rootFS.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nothing, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("inspecting the image's %s: %w", name, err)
	}
	if _, err := s.rootFS.Lstat(aside); err == nil {
		return nil, false, fmt.Errorf("%s already exists in the image (left by an interrupted build?); remove it or put it back as %s first", aside, name)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, false, fmt.Errorf("inspecting the image's %s: no inode number", name)
	}
	j := s.opts.Journal
	h, err := j.Take(cleanup.MovedEntry(s.opts.MountPath, name, aside, st.Dev, st.Ino))
	if err != nil {
		return nil, false, err
	}
	if err := s.rootFS.Rename(name, aside); err != nil {
		return nil, false, errors.Join(fmt.Errorf("moving the image's %s aside: %w", name, err), j.Forget(h))
	}
	done := false
	return func() error {
		if done {
			return nil
		}
		if err := j.Release(h); err != nil {
			return err
		}
		done = true
		return nil
	}, true, nil
}
