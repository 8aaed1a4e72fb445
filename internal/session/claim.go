package session

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// ErrMountPathInUse: another session (another build) holds the mount path,
// or a filesystem is mounted on it.
var ErrMountPathInUse = errors.New("is in use")

// claimMountPath makes the mount path if missing (makeMountDir) and takes
// it for this session: an exclusive flock on its directory, held until the
// root is unmounted, and a check that nothing is mounted on it. Two builds
// given one mount_path (a template with a fixed path run twice at once)
// would otherwise stack their roots on one directory, and each build's
// provisioners would run in the other's image. The directory is made and
// locked under a flock on its parent, so that a build that finds it made
// by another never takes it, and never leaves it behind. Errors wrap
// ErrMountPathInUse when the path is taken.
func (s *Session) claimMountPath() error {
	dir := s.opts.MountPath
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("creating the parent of mount_path %s: %w", dir, err)
	}
	parent, err := os.Open(filepath.Dir(dir))
	if err != nil {
		return err
	}
	defer parent.Close() // drops its flock
	if err := unix.Flock(int(parent.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", parent.Name(), err)
	}
	if err := s.makeMountDir(); err != nil {
		return fmt.Errorf("creating mount_path %s: %w", dir, err)
	}
	inUse := fmt.Errorf("mount_path %s %w: another build running now holds it, or a filesystem is mounted on it; give each build that runs at the same time its own mount_path, or leave mount_path unset (the default is a new directory for every build)", dir, ErrMountPathInUse)
	f, err := os.Open(dir)
	if err != nil {
		return errors.Join(err, s.removeMountDir())
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			err = inUse
		}
		return errors.Join(err, s.removeMountDir())
	}
	// The flock is on the directory under a mount: a build that opens the
	// path once another's root is mounted there locks that root instead.
	resolved, err := filepath.EvalSymlinks(dir)
	if err == nil {
		var mounted bool
		if mounted, err = cleanup.IsMountPoint(resolved); err == nil && mounted {
			err = inUse
		}
	}
	if err != nil {
		f.Close()
		return errors.Join(err, s.removeMountDir())
	}
	s.mountLock = f
	return nil
}

// releaseMountPath drops the claim once nothing of this session is
// mounted on the path any more.
func (s *Session) releaseMountPath() {
	if s.mountLock != nil {
		s.mountLock.Close()
		s.mountLock = nil
	}
}
