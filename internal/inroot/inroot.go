// Package inroot performs file operations confined to a directory that
// holds an untrusted disk image's filesystem (DESIGN.md #3: the image is
// hostile).
//
// Every name is resolved inside the root with openat2(2) and
// RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS: an absolute symlink in the image
// resolves relative to the root, as it would in a chroot, ".." never climbs
// above the root, and /proc magic links are refused. Operations that act on
// the final component (unlink, symlink, rename, mkdir, chown without
// following) open the parent directory that way as an O_PATH fd and then use
// the *at syscall on the plain base name relative to that fd, so no host
// path is ever handed to the kernel.
//
// Names are cleaned lexically first ("a/../b" is "b", a leading "/" is
// ignored), the way filepath.Join would treat them; this can differ from the
// kernel's handling of ".." after a symlink, but it can never leave the root.
//
// Mounts beneath the root are part of it: a name that crosses a mount point
// inside the root (for example a bind of the host's /dev) reaches that
// mount. RemoveAll refuses to descend into mount points.
//
// Needs Linux 5.6 or later (openat2) and /proc mounted (Chmod).
package inroot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Root is an open directory inside which names are resolved.
type Root struct {
	dir   string
	fd    int               // O_PATH|O_DIRECTORY fd of dir
	trace func(name string) // see SetTrace
}

// SetTrace makes the root call fn with every name it resolves, image-
// absolute ("/var/log"): the names given to its methods and the parent
// directories it opens for them. For tests that must know every path a
// caller reaches; nil turns it off. Not safe to call while r is in use.
func (r *Root) SetTrace(fn func(name string)) { r.trace = fn }

// Open opens dir as a root. dir itself is a host path and is resolved
// normally; only names given to Root's methods are confined.
func Open(dir string) (*Root, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("image root %s: %w", dir, err)
	}
	fd, err := unix.Open(abs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open image root", Path: abs, Err: err}
	}
	return &Root{dir: abs, fd: fd}, nil
}

// Close releases the root's fd. A mount on the root cannot be unmounted
// while it is open.
func (r *Root) Close() error {
	if r == nil || r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// SyncFS writes the root's filesystem out (syncfs(2)). On ext4 the blocks of
// removed files become free for new writes only once the journal commits.
func (r *Root) SyncFS() error {
	f, err := r.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return &fs.PathError{Op: "syncfs", Path: r.dir, Err: err}
	}
	return nil
}

// Path is the host path of the root directory.
func (r *Root) Path() string { return r.dir }

// clean turns a name into a relative path inside the root: "." for the root.
func clean(name string) string {
	c := path.Clean("/" + filepath.ToSlash(name))
	if c == "/" {
		return "."
	}
	return c[1:]
}

// split returns the parent (relative, "." for the root) and base name of a
// cleaned name. The root itself has no parent: base is "".
func split(name string) (dir, base string) {
	c := clean(name)
	if c == "." {
		return ".", ""
	}
	d, b := path.Split(c)
	if d == "" {
		return ".", b
	}
	return strings.TrimSuffix(d, "/"), b
}

// show is the host path of a name, for error messages.
func (r *Root) show(name string) string {
	c := clean(name)
	if c == "." {
		return r.dir
	}
	return r.dir + "/" + c
}

// openat2 resolves rel inside the root. EAGAIN is returned by the kernel
// when a concurrent rename might have let ".." escape; retrying is the
// documented answer.
func (r *Root) openat2(rel string, flags uint64, mode uint32) (int, error) {
	if r.fd < 0 {
		return -1, errors.New("image root is closed")
	}
	if r.trace != nil {
		r.trace(path.Clean("/" + rel))
	}
	how := &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	var err error
	for range 32 {
		var fd int
		fd, err = unix.Openat2(r.fd, rel, how)
		if err == nil {
			return fd, nil
		}
		if err == unix.ENOSYS {
			return -1, fmt.Errorf("openat2 is not supported by this kernel (Linux 5.6+ needed): %w", err)
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	return -1, err
}

// parent opens the parent directory of name as O_PATH and returns it with
// the base name. Refuses the root itself.
func (r *Root) parent(op, name string) (int, string, error) {
	dir, base := split(name)
	if base == "" {
		return -1, "", &fs.PathError{Op: op, Path: r.dir, Err: errors.New("operation not allowed on the image root itself")}
	}
	if r.trace != nil {
		r.trace("/" + clean(name))
	}
	fd, err := r.openat2(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", &fs.PathError{Op: op, Path: r.show(name), Err: fmt.Errorf("parent directory: %w", err)}
	}
	return fd, base, nil
}

func (r *Root) pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &fs.PathError{Op: op, Path: r.show(name), Err: err}
}

// OpenFile opens name inside the root. Intermediate symlinks and, unless
// flag has O_NOFOLLOW, the final one are followed inside the root. With
// O_CREAT a dangling final symlink creates its target inside the root.
func (r *Root) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	fd, err := r.openat2(clean(name), uint64(flag), unixMode(perm))
	if err != nil {
		return nil, r.pathErr("open", name, err)
	}
	return os.NewFile(uintptr(fd), r.show(name)), nil
}

// Open opens name read-only, following symlinks inside the root.
func (r *Root) Open(name string) (*os.File, error) {
	return r.OpenFile(name, os.O_RDONLY, 0)
}

// PathFD returns an O_PATH fd for name, fully resolved inside the root
// (the final symlink is followed inside the root too).
//
// It exists to mount onto a target safely (the technique runc uses): pass
// "/proc/self/fd/N" (see ProcPath) as mount(2)'s target, and the kernel
// uses the dentry this fd already holds instead of walking a path again. A
// mount point such as /boot that the image makes a symlink to "/../../etc"
// then lands on <root>/etc, never on the host's /etc. Close the fd once the
// mount is made.
func (r *Root) PathFD(name string) (*os.File, error) {
	fd, err := r.openat2(clean(name), unix.O_PATH, 0)
	if err != nil {
		return nil, r.pathErr("resolve", name, err)
	}
	return os.NewFile(uintptr(fd), r.show(name)), nil
}

// ProcPath is the /proc/self/fd path that refers to f's open file.
func ProcPath(f *os.File) string {
	return "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
}

// RealPath resolves name inside the root and returns the path, inside the
// root, that it actually designates: "/boot" becomes "/etc" when the image
// makes /boot a symlink to "/../../etc". The result has no symlinks at the
// time of the call.
func (r *Root) RealPath(name string) (string, error) {
	f, err := r.PathFD(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return r.PathOf(f)
}

// PathOf returns the path inside the root of an open file (such as one from
// PathFD), read back from /proc/self/fd. It fails if the file is not
// beneath the root (deleted, or moved out of it).
func (r *Root) PathOf(f *os.File) (string, error) {
	got, err := os.Readlink(ProcPath(f))
	if err != nil {
		return "", fmt.Errorf("path of %s: %w", f.Name(), err)
	}
	base, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(r.fd))
	if err != nil {
		return "", fmt.Errorf("path of image root %s: %w", r.dir, err)
	}
	if got == base {
		return "/", nil
	}
	if base == "/" {
		return got, nil
	}
	if !strings.HasPrefix(got, base+"/") {
		return "", fmt.Errorf("%s resolved to %q, outside the image root %q (deleted or moved?)", f.Name(), got, base)
	}
	return strings.TrimPrefix(got, base), nil
}

// ReadFile reads name, following symlinks inside the root.
func (r *Root) ReadFile(name string) ([]byte, error) {
	f, err := r.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// WriteFile writes data to name through a temporary file in the same
// directory renamed over name, so an interrupted write leaves the old file
// whole. The final component is replaced, never followed: if name is a
// symlink, the link is replaced by a regular file. The new file gets perm
// (not masked by umask); when it replaces a regular file, that file's owner
// is kept.
func (r *Root) WriteFile(name string, data []byte, perm fs.FileMode) error {
	return r.WriteFileFrom(name, strings.NewReader(string(data)), perm)
}

// WriteFileFrom is WriteFile with the content streamed from src.
func (r *Root) WriteFileFrom(name string, src io.Reader, perm fs.FileMode) error {
	return r.writeAtomic(name, perm, nil, func(f *os.File) error {
		_, err := io.Copy(f, src)
		return err
	})
}

type owner struct{ uid, gid int }

// writeAtomic creates a temporary file beside name, fills it with fill,
// sets mode (and owner when own is given, otherwise the replaced file's
// owner), fsyncs and renames it over name.
func (r *Root) writeAtomic(name string, perm fs.FileMode, own *owner, fill func(*os.File) error) error {
	pfd, base, err := r.parent("write", name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if own == nil && os.Geteuid() == 0 {
		var st unix.Stat_t
		if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			own = &owner{int(st.Uid), int(st.Gid)}
		}
	}
	var tmp string
	var fd int
	for i := 0; ; i++ {
		tmp = fmt.Sprintf(".%s.inroot-%d-%d", base, os.Getpid(), time.Now().UnixNano()+int64(i))
		if len(tmp) > 255 {
			tmp = tmp[len(tmp)-255:]
		}
		fd, err = unix.Openat(pfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST && i < 100 {
			continue
		}
		break
	}
	if err != nil {
		return r.pathErr("write", name, fmt.Errorf("create temporary file: %w", err))
	}
	f := os.NewFile(uintptr(fd), r.show(name))
	fail := func(what string, err error) error {
		f.Close()
		unix.Unlinkat(pfd, tmp, 0)
		return r.pathErr("write", name, fmt.Errorf("%s: %w", what, err))
	}
	if err := fill(f); err != nil {
		return fail("write content", err)
	}
	if own != nil {
		if err := f.Chown(own.uid, own.gid); err != nil {
			return fail("chown", err)
		}
	}
	// After chown: chown clears setuid/setgid bits.
	if err := unix.Fchmod(fd, unixMode(perm)); err != nil {
		return fail("chmod", err)
	}
	if err := f.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := f.Close(); err != nil {
		unix.Unlinkat(pfd, tmp, 0)
		return r.pathErr("write", name, err)
	}
	if err := unix.Renameat(pfd, tmp, pfd, base); err != nil {
		unix.Unlinkat(pfd, tmp, 0)
		return r.pathErr("write", name, fmt.Errorf("rename temporary file into place: %w", err))
	}
	return nil
}

// stat opens name as O_PATH (following the final symlink or not) and
// fstats it; the FileInfo is the one os.File.Stat builds.
func (r *Root) stat(op, name string, follow bool) (fs.FileInfo, error) {
	flags := uint64(unix.O_PATH)
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := r.openat2(clean(name), flags, 0)
	if err != nil {
		return nil, r.pathErr(op, name, err)
	}
	f := os.NewFile(uintptr(fd), r.show(name))
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, r.pathErr(op, name, err)
	}
	return fi, nil
}

// Lstat describes name without following a final symlink.
// Sys() is a *syscall.Stat_t.
func (r *Root) Lstat(name string) (fs.FileInfo, error) { return r.stat("lstat", name, false) }

// Stat describes name, following a final symlink inside the root.
func (r *Root) Stat(name string) (fs.FileInfo, error) { return r.stat("stat", name, true) }

// Exists reports whether name exists, without following a final symlink
// (a dangling symlink exists).
func (r *Root) Exists(name string) (bool, error) {
	_, err := r.Lstat(name)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// Readlink returns the content of the symlink name, verbatim.
func (r *Root) Readlink(name string) (string, error) {
	fd, err := r.openat2(clean(name), unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", r.pathErr("readlink", name, err)
	}
	defer unix.Close(fd)
	return readlinkat(fd, "", func(err error) error { return r.pathErr("readlink", name, err) })
}

func readlinkat(fd int, name string, wrap func(error) error) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return "", wrap(err)
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// Symlink creates name as a symlink whose content is target (stored as
// given; it is resolved inside the root only when used through Root).
func (r *Root) Symlink(target, name string) error {
	pfd, base, err := r.parent("symlink", name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	return r.pathErr("symlink", name, unix.Symlinkat(target, pfd, base))
}

// Remove removes a file, a symlink (never what it points to) or an empty
// directory.
func (r *Root) Remove(name string) error {
	pfd, base, err := r.parent("remove", name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	err = unix.Unlinkat(pfd, base, 0)
	if err == unix.EISDIR || err == unix.EPERM {
		if err2 := unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR); err2 == nil || err2 != unix.ENOTDIR {
			err = err2
		}
	}
	return r.pathErr("remove", name, err)
}

// RemoveAll removes name and everything beneath it, never following a
// symlink and refusing to descend into a mount point (so a bind of a host
// directory inside the root is never emptied). A missing name is not an
// error.
func (r *Root) RemoveAll(name string) error {
	pfd, base, err := r.parent("removeall", name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer unix.Close(pfd)
	return removeAllAt(pfd, base, r.show(name))
}

func removeAllAt(dirfd int, base, shown string) error {
	var stx unix.Statx_t
	err := unix.Statx(dirfd, base, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &stx)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "removeall", Path: shown, Err: err}
	}
	if stx.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(dirfd, base, 0); err != nil && err != unix.ENOENT {
			return &fs.PathError{Op: "removeall", Path: shown, Err: err}
		}
		return nil
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return &fs.PathError{Op: "removeall", Path: shown, Err: errors.New("is a mount point; refusing to remove across it")}
	}
	fd, err := unix.Openat(dirfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "removeall", Path: shown, Err: err}
	}
	d := os.NewFile(uintptr(fd), shown)
	var errs []error
	for {
		names, rerr := d.Readdirnames(256)
		for _, n := range names {
			if err := removeAllAt(fd, n, shown+"/"+n); err != nil {
				errs = append(errs, err)
			}
		}
		if rerr == io.EOF || len(names) == 0 {
			break
		}
		if rerr != nil {
			errs = append(errs, &fs.PathError{Op: "readdir", Path: shown, Err: rerr})
			break
		}
		if len(errs) > 0 {
			break
		}
	}
	d.Close()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := unix.Unlinkat(dirfd, base, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return &fs.PathError{Op: "removeall", Path: shown, Err: err}
	}
	return nil
}

// MkdirAll creates name and its missing parents with perm (masked by the
// umask, as os.MkdirAll). Existing components, symlinks among them, are
// followed inside the root.
func (r *Root) MkdirAll(name string, perm fs.FileMode) error {
	c := clean(name)
	if c == "." {
		return nil
	}
	parts := strings.Split(c, "/")
	pfd, err := r.openat2(".", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return r.pathErr("mkdir", ".", err)
	}
	defer func() { unix.Close(pfd) }()
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		fd, err := r.openat2(prefix, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err == unix.ENOENT {
			if err := unix.Mkdirat(pfd, parts[i], unixMode(perm)); err != nil && err != unix.EEXIST {
				return r.pathErr("mkdir", prefix, err)
			}
			fd, err = r.openat2(prefix, unix.O_PATH|unix.O_DIRECTORY, 0)
			if err == unix.ENOENT {
				err = errors.New("exists but does not resolve to a directory (dangling symlink?)")
			}
		}
		if err != nil {
			return r.pathErr("mkdir", prefix, err)
		}
		unix.Close(pfd)
		pfd = fd
	}
	return nil
}

// Mkdir creates the directory name (masked by the umask).
func (r *Root) Mkdir(name string, perm fs.FileMode) error {
	pfd, base, err := r.parent("mkdir", name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	return r.pathErr("mkdir", name, unix.Mkdirat(pfd, base, unixMode(perm)))
}

// Rename renames oldname to newname; neither final component is followed
// (a symlink is renamed as a link, a symlink at newname is replaced).
func (r *Root) Rename(oldname, newname string) error {
	ofd, obase, err := r.parent("rename", oldname)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, nbase, err := r.parent("rename", newname)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	if err := unix.Renameat(ofd, obase, nfd, nbase); err != nil {
		return &os.LinkError{Op: "rename", Old: r.show(oldname), New: r.show(newname), Err: err}
	}
	return nil
}

// Chmod changes the mode of name, following a final symlink inside the
// root (Linux cannot chmod a symlink). The change goes through the
// /proc/self/fd magic link of the already resolved file.
func (r *Root) Chmod(name string, mode fs.FileMode) error {
	fd, err := r.openat2(clean(name), unix.O_PATH, 0)
	if err != nil {
		return r.pathErr("chmod", name, err)
	}
	defer unix.Close(fd)
	return r.pathErr("chmod", name, unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unixMode(mode), 0))
}

// Chown changes the owner of name, following a final symlink inside the root.
func (r *Root) Chown(name string, uid, gid int) error {
	fd, err := r.openat2(clean(name), unix.O_PATH, 0)
	if err != nil {
		return r.pathErr("chown", name, err)
	}
	defer unix.Close(fd)
	return r.pathErr("chown", name, unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH))
}

// Lchown changes the owner of name itself, a symlink included.
func (r *Root) Lchown(name string, uid, gid int) error {
	pfd, base, err := r.parent("lchown", name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	return r.pathErr("lchown", name, unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW))
}

// Chtimes sets access and modification times of name itself (a symlink is
// not followed).
func (r *Root) Chtimes(name string, atime, mtime time.Time) error {
	pfd, base, err := r.parent("chtimes", name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return r.pathErr("chtimes", name, unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW))
}

// unixMode converts permission, setuid, setgid and sticky bits. Raw Unix
// bits 0o7000 (as in 0o4755, which Go's FileMode does not define) are
// honoured too, since callers often carry modes from tar headers or stat.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m) & 0o7777
	if m&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}
