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
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CopyIn copies hostSrc (a file, or a directory tree) from the host to name
// inside the root: name becomes the copy (it is not a directory to copy
// into). hostSrc itself is followed if it is a symlink; inside a tree,
// symlinks are copied as links, regular files and directories with their
// mode and times, and with their owner when running as root. Hard links
// become separate files. Devices, FIFOs and sockets are refused. Existing
// files at the destination are replaced atomically (see WriteFile);
// existing directories are merged into.
func (r *Root) CopyIn(hostSrc, name string) error {
	fi, err := os.Stat(hostSrc)
	if err != nil {
		return fmt.Errorf("copy into image: %w", err)
	}
	return r.copyIn(hostSrc, fi, clean(name), true)
}

func (r *Root) copyIn(src string, fi fs.FileInfo, name string, top bool) error {
	var own *owner
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		own = &owner{int(st.Uid), int(st.Gid)}
	}
	switch {
	case fi.Mode().IsRegular():
		f, err := os.Open(src)
		if err != nil {
			return fmt.Errorf("copy into image: %w", err)
		}
		defer f.Close()
		if err := r.writeAtomic(name, fi.Mode(), own, func(w *os.File) error {
			_, err := io.Copy(w, f)
			return err
		}); err != nil {
			return fmt.Errorf("copy %s into image: %w", src, err)
		}
		return r.Chtimes(name, fi.ModTime(), fi.ModTime())

	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("copy into image: %w", err)
		}
		if err := r.symlinkAtomic(target, name); err != nil {
			return fmt.Errorf("copy %s into image: %w", src, err)
		}
		if own != nil {
			if err := r.Lchown(name, own.uid, own.gid); err != nil {
				return err
			}
		}
		return r.Chtimes(name, fi.ModTime(), fi.ModTime())

	case fi.IsDir():
		var err error
		if top {
			err = r.MkdirAll(name, 0o700)
		} else if err = r.Mkdir(name, 0o700); errors.Is(err, fs.ErrExist) {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("copy %s into image: %w", src, err)
		}
		if st, err := r.Stat(name); err != nil {
			return err
		} else if !st.IsDir() {
			return fmt.Errorf("copy %s into image: %s exists and is not a directory", src, r.show(name))
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return fmt.Errorf("copy into image: %w", err)
		}
		for _, e := range entries {
			efi, err := e.Info()
			if err != nil {
				return fmt.Errorf("copy into image: %w", err)
			}
			if err := r.copyIn(filepath.Join(src, e.Name()), efi, path.Join(name, e.Name()), false); err != nil {
				return err
			}
		}
		// Owner, mode and times last: the tree is filled first, even when the
		// directory is read-only.
		if own != nil {
			if err := r.Chown(name, own.uid, own.gid); err != nil {
				return err
			}
		}
		if err := r.Chmod(name, fi.Mode()); err != nil {
			return err
		}
		return r.Chtimes(name, fi.ModTime(), fi.ModTime())

	default:
		return fmt.Errorf("copy %s into image: unsupported file type %s (only files, directories and symlinks)", src, fi.Mode().Type())
	}
}

// symlinkAtomic creates a symlink beside name and renames it over name.
func (r *Root) symlinkAtomic(target, name string) error {
	pfd, base, err := r.parent("symlink", name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	tmp := fmt.Sprintf(".%s.inroot-%d-%d", base, os.Getpid(), time.Now().UnixNano())
	if len(tmp) > 255 {
		tmp = tmp[len(tmp)-255:]
	}
	if err := unix.Symlinkat(target, pfd, tmp); err != nil {
		return r.pathErr("symlink", name, err)
	}
	if err := unix.Renameat(pfd, tmp, pfd, base); err != nil {
		unix.Unlinkat(pfd, tmp, 0)
		return r.pathErr("symlink", name, err)
	}
	return nil
}

// CopyOut copies name (a file or a directory tree) from the image to
// hostDst on the host; hostDst becomes the copy. name itself is resolved
// inside the root (a final symlink is followed inside the root); inside a
// tree no symlink is followed: links are recreated on the host as links,
// with their content verbatim. Modes are kept without setuid, setgid and
// sticky bits (an image must not plant setuid files on the host); owners
// are not kept. Devices, FIFOs and sockets are refused: a device node in a
// hostile image could otherwise read a host disk.
func (r *Root) CopyOut(name, hostDst string) error {
	fd, err := r.openat2(clean(name), unix.O_PATH, 0)
	if err != nil {
		return r.pathErr("copy out", name, err)
	}
	defer unix.Close(fd)
	return copyOutFD(fd, r.show(name), hostDst, true)
}

// copyOutFD copies the file behind the O_PATH fd to dst.
func copyOutFD(fd int, shown, dst string, top bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &fs.PathError{Op: "copy out", Path: shown, Err: err}
	}
	mode := fs.FileMode(st.Mode & 0o777)
	mtime := time.Unix(st.Mtim.Unix())
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		// Reopen the very inode the O_PATH fd holds: no second path walk.
		src, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDONLY, 0)
		if err != nil {
			return &fs.PathError{Op: "copy out", Path: shown, Err: err}
		}
		defer src.Close()
		if err := removeNonDir(dst); err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("copy %s out of image: %w", shown, err)
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return fmt.Errorf("copy %s out of image to %s: %w", shown, dst, err)
		}
		if err := out.Chmod(mode); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
		return os.Chtimes(dst, mtime, mtime)

	case unix.S_IFLNK:
		target, err := readlinkat(fd, "", func(err error) error { return &fs.PathError{Op: "readlink", Path: shown, Err: err} })
		if err != nil {
			return err
		}
		if err := removeNonDir(dst); err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return fmt.Errorf("copy %s out of image: %w", shown, err)
		}
		ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
		unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
		return nil

	case unix.S_IFDIR:
		if err := os.Mkdir(dst, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("copy %s out of image: %w", shown, err)
		}
		if fi, err := os.Lstat(dst); err != nil {
			return err
		} else if !fi.IsDir() {
			return fmt.Errorf("copy %s out of image: %s exists and is not a directory", shown, dst)
		}
		dfd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &fs.PathError{Op: "copy out", Path: shown, Err: err}
		}
		d := os.NewFile(uintptr(dfd), shown)
		defer d.Close()
		names, err := d.Readdirnames(-1)
		if err != nil {
			return &fs.PathError{Op: "readdir", Path: shown, Err: err}
		}
		for _, n := range names {
			// One plain name relative to a directory fd, never followed:
			// this cannot leave the directory.
			efd, err := unix.Openat(dfd, n, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return &fs.PathError{Op: "copy out", Path: shown + "/" + n, Err: err}
			}
			err = copyOutFD(efd, shown+"/"+n, filepath.Join(dst, n), false)
			unix.Close(efd)
			if err != nil {
				return err
			}
		}
		if err := os.Chmod(dst, mode); err != nil {
			return err
		}
		return os.Chtimes(dst, mtime, mtime)

	default:
		return fmt.Errorf("copy %s out of image: unsupported file type (mode %#o): only files, directories and symlinks", shown, st.Mode&unix.S_IFMT)
	}
}

// removeNonDir removes dst if it exists and is not a directory, so that the
// copy replaces it rather than writing through a link.
func removeNonDir(dst string) error {
	fi, err := os.Lstat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("copy out of image: %s is a directory", dst)
	}
	return os.Remove(dst)
}
