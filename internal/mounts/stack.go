// Package mounts builds and tears down the mount stack of one image: its
// root filesystem on a host directory, the image's own fstab mounts beneath
// it, and the chroot mounts (/proc, /sys, /dev...).
//
// Every mount beneath the root is made onto a target resolved inside the
// image root (internal/inroot): the target is opened with openat2 and
// RESOLVE_IN_ROOT and mount(2) is given "/proc/self/fd/N", so the kernel
// mounts on the dentry already resolved (the runc technique). A hostile
// image whose /boot is a symlink to "/../../etc" gets the mount on
// <root>/etc, never on the host's /etc. Later operations on a mount
// (propagation change, read-only remount, unmount) go through an O_PATH fd
// of its parent directory, resolved the same way, plus its plain name with
// UMOUNT_NOFOLLOW; the mount's ID is checked before unmounting.
//
// Each mount is made private right after it is made, so nothing mounted or
// unmounted under the root propagates to the host's mount peers (a bind of
// the host's shared /dev would otherwise join /dev's peer group).
package mounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
)

// Journal records each mount before it is made (DESIGN.md #2), so that a
// build killed mid-way leaves a record the next build can reap.
//
// TakeMount is called before mount(2) with the absolute host path the
// mount will land on. The returned forget records that the mount is gone
// without acting: the Stack calls it after it unmounted the target itself
// (with its own busy retries), or when mount(2) failed. A mount whose
// unmount failed is not forgotten, so the journal keeps it for the reaper.
type Journal interface {
	TakeMount(target, source, fstype string) (forget func() error, err error)
}

// ErrBusy is wrapped by UnmountAll's error when a target stayed busy and
// was detached lazily (MNT_DETACH): the mount is gone from the tree but the
// filesystem (and its loop device) stays in use until the last user exits.
var ErrBusy = errors.New("mount busy")

type mount struct {
	host   string // absolute host path of the mount point
	rel    string // path inside the root with no symlinks; "" for the root mount
	source string
	fstype string
	mntID  uint64 // 0 when the kernel does not report mount IDs
	forget func() error

	// created are the directories made inside the root for this mount
	// point (paths inside the root, shallowest first); with removeCreated
	// they go again once it is unmounted.
	created       []string
	removeCreated bool
}

// Stack is the mount stack of one image. Not safe for concurrent use.
type Stack struct {
	journal Journal
	root    *inroot.Root
	mounts  []*mount

	// Logf receives warnings (lazy detach). Defaults to discarding them.
	Logf func(format string, args ...any)
	// BusyRetries and BusyWait control the retries of an unmount that
	// fails with EBUSY before falling back to MNT_DETACH.
	BusyRetries int
	BusyWait    time.Duration
	// ReadOnly mounts the fstab entries read-only, for sessions that only
	// look (a read-only loop device refuses a read-write mount).
	ReadOnly bool
	// Unmountable, when set, is asked by MountFstab about an entry whose
	// filesystem the kernel cannot mount (dev its device, fstype its
	// type): served says it mounted something there itself (MountStage);
	// otherwise why (may be "") is added to the skip's reason. An error
	// stops MountFstab.
	Unmountable func(e fstab.Entry, dev, fstype string) (served bool, why string, err error)
	// ExtraData, when set, gives mount data MountFstab adds for a
	// filesystem type (a reproducible build's ext4 options), or "".
	ExtraData func(fstype string) string
	// NoDev mounts the fstab entries nodev: a device node in the image
	// (one aimed at a host disk) cannot be opened through them.
	NoDev bool
	// DevNodes are the block device nodes (this build's loop devices)
	// MountChroot adds to the private /dev beside sandbox.CharDevices.
	DevNodes []sandbox.Node
}

// NewStack returns an empty stack that records its mounts in j (nil: no
// journal).
func NewStack(j Journal) *Stack {
	return &Stack{journal: j, BusyRetries: 5, BusyWait: 200 * time.Millisecond}
}

func (s *Stack) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Stack) take(target, source, fstype string, flags uintptr) (func() error, error) {
	if flags&unix.MS_BIND != 0 {
		fstype = "bind"
	}
	if s.journal == nil {
		return func() error { return nil }, nil
	}
	forget, err := s.journal.TakeMount(target, source, fstype)
	if err != nil {
		return nil, fmt.Errorf("journal mount of %s on %s: %w", source, target, err)
	}
	return forget, nil
}

// Root returns the image root of the mounted stack (nil before MountRoot).
// It is closed by UnmountAll.
func (s *Stack) Root() *inroot.Root { return s.root }

// RootPath is the host path the root filesystem is mounted on ("" before
// MountRoot).
func (s *Stack) RootPath() string {
	if s.root == nil {
		return ""
	}
	return s.root.Path()
}

// Mounted lists the host paths of the mounts held, in mount order.
func (s *Stack) Mounted() []string {
	out := make([]string, len(s.mounts))
	for i, m := range s.mounts {
		out[i] = m.host
	}
	return out
}

// MountRoot mounts dev (a loop device) on the host directory target,
// creating it if needed. fstype "" probes dev with blkid. flags and data
// are mount(2)'s (data such as "subvol=@" for btrfs).
//
// target is first bind-mounted on itself and made private (a fence), and
// the root filesystem is mounted on top of the fence: a mount's propagation
// follows its parent, so the image's mounts never propagate to the peers of
// the host mount target lives on (on systemd hosts "/" is shared). Only the
// fence, an empty directory bind, propagates there, briefly. Mounted()
// therefore lists target twice.
func (s *Stack) MountRoot(dev, fstype, target string, flags uintptr, data string) error {
	if s.root != nil {
		return fmt.Errorf("mount %s on %s: the stack already has a root at %s", dev, target, s.root.Path())
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return fmt.Errorf("mount root %s: %w", target, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("mount root %s: %w", dev, err)
	}
	if fstype == "" {
		fs, err := Probe(dev)
		if err != nil {
			return err
		}
		if fs.Type == "" {
			return fmt.Errorf("mount root: no filesystem found on %s", dev)
		}
		fstype = fs.Type
	}
	if err := s.mountHost(abs, abs, "", unix.MS_BIND); err != nil {
		return fmt.Errorf("private fence for the image root: %w", err)
	}
	if err := s.mountHost(dev, abs, fstype, flags, data); err != nil {
		return errors.Join(err, s.UnmountAll())
	}
	root, err := inroot.Open(abs)
	if err != nil {
		return errors.Join(err, s.UnmountAll())
	}
	s.root = root
	return nil
}

// mountHost mounts source on the host path target, makes the mount private
// and pushes it on the stack.
func (s *Stack) mountHost(source, target, fstype string, flags uintptr, data ...string) error {
	forget, err := s.take(target, source, fstype, flags)
	if err != nil {
		return err
	}
	var d string
	if len(data) > 0 {
		d = data[0]
	}
	if err := unix.Mount(source, target, fstype, flags, d); err != nil {
		forget()
		what := fstype
		if flags&unix.MS_BIND != 0 {
			what = "bind"
		}
		return &MountError{Source: source, Target: target, FSType: what, Err: err}
	}
	m := &mount{host: target, source: source, fstype: fstype, forget: forget}
	if err := unix.Mount("", target, "", unix.MS_PRIVATE, ""); err != nil {
		err = fmt.Errorf("make %s private: %w", target, err)
		if uerr := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); uerr != nil {
			s.mounts = append(s.mounts, m) // keep it: UnmountAll retries
			return errors.Join(err, fmt.Errorf("unmount %s after failure: %w", target, uerr))
		}
		forget()
		return err
	}
	m.mntID, _ = mountID(unix.AT_FDCWD, target)
	s.mounts = append(s.mounts, m)
	return nil
}

// MountInRoot mounts source (fstype, flags and data as mount(2)) on
// relTarget, a path inside the image root resolved there (never on the
// host), creating the directory inside the root if missing. A target that
// resolves to the root itself is refused.
func (s *Stack) MountInRoot(source, relTarget, fstype string, flags uintptr, data string) error {
	return s.mountIn(source, relTarget, fstype, flags, data, false, false)
}

// PlaceholderSource is the source name of a placeholder mount, as
// /proc/mounts and df in the chroot show it.
const PlaceholderSource = "imagefactory-skipped"

// MountPlaceholder mounts an empty read-only tmpfs on relTarget, where a
// filesystem of the image could not be mounted: writes there fail with
// EROFS instead of landing unseen in the parent filesystem. The mount point
// directories it had to create are removed again when it is unmounted, so
// the parent filesystem is left as it was.
func (s *Stack) MountPlaceholder(relTarget string) error {
	err := s.mountIn(PlaceholderSource, relTarget, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"size=4k,nr_inodes=1,mode=0755", false, false)
	if err != nil {
		return err
	}
	s.mounts[len(s.mounts)-1].removeCreated = true
	return nil
}

// StageSource is the source name of a MountStage tmpfs, as /proc/mounts
// and df in the chroot show it.
const StageSource = "imagefactory-staged"

// MountStage mounts an empty tmpfs of size bytes on relTarget (owner uid,
// gid; mode of its root), where a filesystem of the image the kernel cannot
// mount is served by a copy of its files (internal/fatstage), and returns
// the host path of the mount point, symlinks resolved inside the root. Like
// MountPlaceholder, the mount point directories it had to create are
// removed again when it is unmounted.
func (s *Stack) MountStage(relTarget string, size int64, mode os.FileMode, uid, gid int) (string, error) {
	data := fmt.Sprintf("size=%d,mode=%04o,uid=%d,gid=%d", size, mode.Perm(), uid, gid)
	if err := s.mountIn(StageSource, relTarget, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data, false, false); err != nil {
		return "", err
	}
	m := s.mounts[len(s.mounts)-1]
	m.removeCreated = true
	return m.host, nil
}

// OpenMount opens the mount point of the mount the stack made at host
// (O_PATH), resolved inside the image root, and checks that the mount
// there is still the one made: a provisioner that renamed or replaced a
// parent directory must not lead the caller elsewhere. Close the file.
func (s *Stack) OpenMount(host string) (*os.File, error) {
	for _, m := range s.mounts {
		if m.host != host || m.rel == "" {
			continue
		}
		pfd, err := s.root.PathFD(path.Dir(m.rel))
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", host, err)
		}
		defer pfd.Close()
		p := inroot.ProcPath(pfd) + "/" + path.Base(m.rel)
		if id, err := mountID(unix.AT_FDCWD, p); m.mntID != 0 && (err != nil || id != m.mntID) {
			return nil, fmt.Errorf("%s is no longer the mount the build made there (was it moved or covered inside the chroot?)", host)
		}
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", host, err)
		}
		return os.NewFile(uintptr(fd), host), nil
	}
	return nil, fmt.Errorf("%s: no mount of this stack there", host)
}

// Bind bind-mounts the host path hostPath (a directory or a file) on
// relTarget inside the image root, read-only if asked. The bind is not
// recursive: mounts beneath hostPath are not carried along.
func (s *Stack) Bind(hostPath, relTarget string, readOnly bool) error {
	fi, err := os.Stat(hostPath)
	if err != nil {
		return fmt.Errorf("bind %s on %s: %w", hostPath, relTarget, err)
	}
	return s.mountIn(hostPath, relTarget, "", unix.MS_BIND, "", !fi.IsDir(), readOnly)
}

func (s *Stack) mountIn(source, relTarget, fstype string, flags uintptr, data string, fileTarget, readOnly bool) error {
	if s.root == nil {
		return fmt.Errorf("mount %s on %s: no root mounted yet", source, relTarget)
	}
	rel := path.Clean("/" + relTarget)
	if rel == "/" {
		return fmt.Errorf("mount %s: target %q is the image root itself", source, relTarget)
	}
	dir := rel
	if fileTarget {
		dir = path.Dir(rel)
	}
	created, err := s.mkdirAll(dir)
	if err != nil {
		return fmt.Errorf("mount %s: %w", source, err)
	}
	// A mount that fails leaves nothing in the image.
	undo := func() { s.removeDirs(created) }
	if fileTarget {
		f, err := s.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			undo()
			return fmt.Errorf("mount %s: create file mount point: %w", source, err)
		}
		f.Close()
	}
	fd, err := s.root.PathFD(rel)
	if err != nil {
		undo()
		return fmt.Errorf("mount %s: %w", source, err)
	}
	defer fd.Close()
	real, err := s.root.PathOf(fd)
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", source, rel, err)
	}
	if real == "/" {
		return fmt.Errorf("mount %s: target %s resolves to the image root itself (a symlink in the image?); refusing to mount over the root", source, rel)
	}
	host := s.root.Path() + real
	var st unix.Stat_t
	if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
		return fmt.Errorf("mount %s: stat %s: %w", source, host, err)
	}
	if isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR; isDir == fileTarget {
		return fmt.Errorf("mount %s on %s: the target in the image is not a %s", source, host, map[bool]string{true: "regular file", false: "directory"}[fileTarget])
	}
	forget, err := s.take(host, source, fstype, flags)
	if err != nil {
		return err
	}
	if err := unix.Mount(source, inroot.ProcPath(fd), fstype, flags, data); err != nil {
		forget()
		undo()
		what := fstype
		if flags&unix.MS_BIND != 0 {
			what = "bind"
		}
		return &MountError{Source: source, Target: host, FSType: what, Err: err}
	}
	m := &mount{host: host, rel: real, source: source, fstype: fstype, forget: forget, created: created}
	post := func(op func(p string) error) error {
		pfd, err := s.root.PathFD(path.Dir(real))
		if err != nil {
			return err
		}
		defer pfd.Close()
		return op(inroot.ProcPath(pfd) + "/" + path.Base(real))
	}
	err = post(func(p string) error {
		if err := unix.Mount("", p, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", host, err)
		}
		if readOnly {
			if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|lockedFlags(p), ""); err != nil {
				return fmt.Errorf("remount %s read-only: %w", host, err)
			}
		}
		m.mntID, _ = mountID(unix.AT_FDCWD, p)
		return nil
	})
	s.mounts = append(s.mounts, m)
	if err != nil {
		if uerr := s.unmountOne(m, false); uerr != nil {
			return errors.Join(err, uerr)
		}
		s.mounts = s.mounts[:len(s.mounts)-1]
		forget()
		return err
	}
	return nil
}

// MountError is a failed mount(2); Err is the errno (unix.ENODEV when the
// kernel does not know the filesystem type).
type MountError struct {
	Source, Target, FSType string
	Err                    error
}

func (e *MountError) Error() string {
	return fmt.Sprintf("mount %s (%s) on %s: %v", e.Source, e.FSType, e.Target, e.Err)
}

func (e *MountError) Unwrap() error { return e.Err }

// lockedFlags are the flags a read-only bind remount must keep from the
// mount (nosuid, nodev, noexec, atime flags), or the kernel may refuse it.
func lockedFlags(p string) uintptr {
	var sfs unix.Statfs_t
	if unix.Statfs(p, &sfs) != nil {
		return 0
	}
	var f uintptr
	for st, ms := range map[int64]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME,
	} {
		if sfs.Flags&st != 0 {
			f |= ms
		}
	}
	return f
}

// mountID is the ID of the mount p is on (statx STATX_MNT_ID, Linux 5.8+);
// 0 when unknown.
func mountID(dirfd int, p string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(dirfd, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, nil
	}
	return stx.Mnt_id, nil
}

// unmountOne unmounts m once (detach: MNT_DETACH). A mount beneath the root
// is reached through its parent, resolved inside the root, and its ID is
// checked first: if the chroot moved things around, nothing is unmounted
// by a path that might now lead elsewhere.
func (s *Stack) unmountOne(m *mount, detach bool) error {
	flags := unix.UMOUNT_NOFOLLOW
	if detach {
		flags |= unix.MNT_DETACH
	}
	if m.rel == "" {
		if s.root != nil {
			s.root.Close() // an open fd on the root mount keeps it busy
			s.root = nil
		}
		if id, err := mountID(unix.AT_FDCWD, m.host); err == nil && m.mntID != 0 && id != m.mntID {
			return fmt.Errorf("unmount %s: the mount there is no longer the one made (mount ID %d, expected %d)", m.host, id, m.mntID)
		}
		if err := unix.Unmount(m.host, flags); err != nil {
			return fmt.Errorf("unmount %s: %w", m.host, err)
		}
		return nil
	}
	if s.root == nil {
		return fmt.Errorf("unmount %s: image root already closed", m.host)
	}
	pfd, err := s.root.PathFD(path.Dir(m.rel))
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.host, err)
	}
	defer pfd.Close()
	p := inroot.ProcPath(pfd) + "/" + path.Base(m.rel)
	if m.mntID != 0 {
		id, err := mountID(unix.AT_FDCWD, p)
		if err != nil {
			return fmt.Errorf("unmount %s: %w", m.host, err)
		}
		if id != m.mntID {
			return fmt.Errorf("unmount %s: the mount there is no longer the one made (mount ID %d, expected %d); was it moved inside the chroot?", m.host, id, m.mntID)
		}
	}
	if err := unix.Unmount(p, flags); err != nil {
		return fmt.Errorf("unmount %s: %w", m.host, err)
	}
	return nil
}

// UnmountAll unmounts everything in reverse order. A target that stays
// busy (EBUSY) after BusyRetries short waits is reported by name; the
// caller should have killed the chroot's processes first. As a last resort
// it is detached lazily with a warning, and the error wraps ErrBusy. Mounts
// that could not be unmounted at all stay in the stack (and in the
// journal). Detaching the root lazily detaches everything beneath it.
func (s *Stack) UnmountAll() error {
	var errs []error
	var left []*mount
	for i := len(s.mounts) - 1; i >= 0; i-- {
		m := s.mounts[i]
		err := s.unmountOne(m, false)
		for try := 0; errors.Is(err, unix.EBUSY) && try < s.BusyRetries; try++ {
			time.Sleep(s.BusyWait)
			err = s.unmountOne(m, false)
		}
		if errors.Is(err, unix.EBUSY) {
			s.logf("warning: %s is still busy after %d retries (a process in the chroot still uses it?); detaching it lazily", m.host, s.BusyRetries)
			if derr := s.unmountOne(m, true); derr == nil {
				errs = append(errs, fmt.Errorf("%w: %s was busy and was detached lazily", ErrBusy, m.host))
				err = nil
				if m.rel == "" {
					// A lazy detach at the root took every mount left beneath it.
					for _, l := range left {
						l.forget()
					}
					left = nil
				}
			} else {
				err = errors.Join(err, derr)
			}
		}
		if err != nil {
			errs = append(errs, err)
			left = append(left, m)
			continue
		}
		if err := m.forget(); err != nil {
			errs = append(errs, fmt.Errorf("journal release of %s: %w", m.host, err))
		}
		if m.removeCreated {
			s.removeDirs(m.created)
		}
	}
	// Keep the remaining ones in mount order.
	s.mounts = s.mounts[:0]
	for i := len(left) - 1; i >= 0; i-- {
		s.mounts = append(s.mounts, left[i])
	}
	if len(s.mounts) == 0 && s.root != nil {
		s.root.Close()
		s.root = nil
	}
	return errors.Join(errs...)
}

// NewStackOn returns a stack on a root mounted by someone else (a
// provisioner working in a builder's mounted image): it mounts beneath
// root and UnmountAll unmounts only what it mounted, then closes root.
func NewStackOn(j Journal, root *inroot.Root) *Stack {
	s := NewStack(j)
	s.root = root
	return s
}

// mkdirAll creates dir and its missing parents inside the root and returns
// the directories it created (their paths inside the root, symlinks
// resolved there, shallowest first), so that exactly those can be removed.
func (s *Stack) mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := path.Clean("/" + dir); d != "/"; d = path.Dir(d) {
		if _, err := s.root.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
	}
	if err := s.root.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	created := make([]string, 0, len(missing))
	for i := len(missing) - 1; i >= 0; i-- {
		real, err := s.root.RealPath(missing[i])
		if err != nil {
			s.removeDirs(created)
			return nil, err
		}
		created = append(created, real)
	}
	return created, nil
}

// removeDirs removes the directories mkdirAll created, deepest first, if
// they are still empty; a directory something was put in stays.
func (s *Stack) removeDirs(created []string) {
	if s.root == nil {
		return
	}
	for i := len(created) - 1; i >= 0; i-- {
		if err := s.root.Remove(created[i]); err != nil {
			s.logf("warning: could not remove %s, the mount point the build created in the image: %v", created[i], err)
			return
		}
	}
}
