package cleanup

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"syscall"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// MovedEntry records that the file name of the image mounted at root (a
// path inside the image, such as /etc/ld.so.preload) is about to be
// renamed to aside for the build's session; releasing it renames it back.
// dev and ino are the file's (its filesystem's device and its inode, from
// lstat): a rename keeps them, so the release moves back exactly that file,
// with its bytes, mode, owner, times and xattrs. Take it before the rename.
func MovedEntry(root, name, aside string, dev, ino uint64) Entry {
	return Entry{Kind: KindMoved, Path: canonical(root), Name: name, Aside: aside, Dev: dev, Ino: ino}
}

func (e Entry) validateMoved() error {
	switch {
	case path.Clean(e.Path) == "/":
		return fmt.Errorf("cleanup: refusing a moved-file entry rooted at /: it names an image's file")
	case e.Name == "" || e.Aside == "" || path.Clean("/"+e.Name) == path.Clean("/"+e.Aside):
		return fmt.Errorf("cleanup: moved-file entry under %s: name %q and aside %q must be two paths", e.Path, e.Name, e.Aside)
	case e.Ino == 0:
		return fmt.Errorf("cleanup: moved-file entry %s%s has no inode: the reaper could not tell the file from another", e.Path, e.Name)
	}
	return nil
}

// releaseMoved puts the file back, resolving both names inside the root
// (inroot: a symlink in the image never leads to a host file). The file at
// aside must still be the one moved (same device and inode); anything else
// is left alone. If a provisioner put a new file at name meanwhile, that
// one is kept on purpose and the original dropped, as chrootprep does for
// the files it swaps.
func releaseMoved(e Entry) (string, error) {
	r, err := inroot.Open(e.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("%s: the image root %s is gone; nothing to put back", e.Name, e.Path), nil
	}
	if err != nil {
		return "", fmt.Errorf("cleanup: putting back %s in %s: %w", e.Name, e.Path, err)
	}
	defer r.Close()
	same := func(name string) (bool, error) {
		fi, err := r.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		return ok && st.Dev == e.Dev && st.Ino == e.Ino, nil
	}
	aside, err := same(e.Aside)
	if err != nil {
		return "", fmt.Errorf("cleanup: putting back %s in %s: %w", e.Name, e.Path, err)
	}
	if !aside {
		if back, _ := same(e.Name); back {
			return fmt.Sprintf("%s%s already in place", e.Path, e.Name), nil
		}
		return fmt.Sprintf("%s%s: the file moved aside to %s is not there (was the image unmounted?); nothing put back", e.Path, e.Name, e.Aside), nil
	}
	if _, err := r.Lstat(e.Name); err == nil {
		if err := r.Remove(e.Aside); err != nil {
			return "", fmt.Errorf("cleanup: removing the image's old %s (a provisioner put a new one in place): %w", e.Name, err)
		}
		return fmt.Sprintf("kept the new %s%s a provisioner put in place; the image's old one was dropped", e.Path, e.Name), nil
	}
	if err := r.Rename(e.Aside, e.Name); err != nil {
		return "", fmt.Errorf("cleanup: putting back %s in %s: %w", e.Name, e.Path, err)
	}
	return fmt.Sprintf("put %s%s back", e.Path, e.Name), nil
}
