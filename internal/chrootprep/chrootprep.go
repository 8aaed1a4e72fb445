// Package chrootprep prepares a mounted image for commands run in a chroot
// (name resolution, no service starts) and puts every file it touched back
// exactly as it was. All paths are resolved inside the image root.
package chrootprep

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// Path is the PATH of commands run in an image's chroot: Debian's root
// PATH (/etc/login.defs ENV_SUPATH), the image's, not the build host's.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// backupSuffix marks the image's own file while ours stands in its place.
// A rename keeps the original's inode, so owner, mode, times, xattrs and a
// symlink's target all come back untouched.
const backupSuffix = ".imagefactory-orig"

// Restore undoes one preparation. It is safe to call more than once.
type Restore func() error

// swap puts content at name, moving the image's own entry (file, symlink,
// anything) aside. The returned Restore removes ours and moves the original
// back; if something other than our content stands at name by then (a
// provisioner replaced it on purpose), that is kept and the original dropped.
func swap(root *inroot.Root, name string, content []byte, perm fs.FileMode) (Restore, error) {
	backup := name + backupSuffix
	if _, err := root.Lstat(backup); err == nil {
		return nil, fmt.Errorf("%s already exists in the image (left by an interrupted build?); remove it first", backup)
	}
	_, err := root.Lstat(name)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("inspecting %s in the image: %w", name, err)
	}
	if existed {
		if err := root.Rename(name, backup); err != nil {
			return nil, fmt.Errorf("moving the image's %s aside: %w", name, err)
		}
	}
	if err := root.WriteFile(name, content, perm); err != nil {
		if existed {
			_ = root.Rename(backup, name)
		}
		return nil, fmt.Errorf("writing %s in the image: %w", name, err)
	}

	// removed records that ours is already gone, so that a Restore retried
	// after a failed rename puts the original back instead of taking the
	// now empty name for "a provisioner deleted it" and dropping the backup.
	done, removed := false, false
	return func() error {
		if done {
			return nil
		}
		ours := removed || stillOurs(root, name, content)
		if ours && !removed {
			if err := root.Remove(name); err != nil {
				return fmt.Errorf("removing the build's %s: %w", name, err)
			}
			removed = true
		}
		if existed {
			if ours {
				if err := root.Rename(backup, name); err != nil {
					return fmt.Errorf("restoring the image's %s: %w", name, err)
				}
			} else if err := root.Remove(backup); err != nil {
				return fmt.Errorf("removing the image's old %s (a provisioner replaced it): %w", name, err)
			}
		}
		done = true
		return nil
	}, nil
}

// stillOurs reports whether name is still the regular file swap wrote.
func stillOurs(root *inroot.Root, name string, content []byte) bool {
	fi, err := root.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	got, err := root.ReadFile(name)
	return err == nil && bytes.Equal(got, content)
}
