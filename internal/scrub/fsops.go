package scrub

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
)

// Every path here is image-absolute ("/var/log/x"). Nothing in this file
// uses os.* on an image path: all access goes through c.Root, which resolves
// names inside the image root.

// checkGlob rejects a glob that is not image-absolute or is malformed.
func checkGlob(g string) error {
	if !strings.HasPrefix(g, "/") {
		return fmt.Errorf("path glob %q must be absolute inside the image (start with /)", g)
	}
	if _, err := path.Match(g, ""); err != nil {
		return fmt.Errorf("path glob %q: %w", g, err)
	}
	return nil
}

// kept reports whether p, or a directory above it, matches a KeepPaths glob.
func (c *Context) kept(p string) bool {
	for _, g := range c.Options.KeepPaths {
		for q := path.Clean(p); ; q = path.Dir(q) {
			if ok, _ := path.Match(path.Clean(g), q); ok {
				return true
			}
			if q == "/" {
				break
			}
		}
	}
	return false
}

// skippable are errors meaning "nothing there to work on": a hostile or
// simply different image may have a file where a directory is expected, or
// a symlink loop.
func skippable(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP)
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// matchName matches one path component the way glob(3) does: a wildcard
// never matches a leading dot unless the pattern starts with one.
func matchName(pattern, name string) bool {
	if strings.HasPrefix(name, ".") && !strings.HasPrefix(pattern, ".") {
		return false
	}
	ok, _ := path.Match(pattern, name)
	return ok
}

// readDir lists the directory p (symlinks followed inside the root when
// follow is set). A missing directory lists as empty.
func (c *Context) readDir(p string, follow bool) ([]string, error) {
	flag := os.O_RDONLY | syscall.O_DIRECTORY
	if !follow {
		flag |= syscall.O_NOFOLLOW
	}
	f, err := c.Root.OpenFile(p, flag, 0)
	if err != nil {
		if skippable(err) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	var names []string
	for {
		batch, err := f.Readdirnames(512)
		names = append(names, batch...)
		if err == io.EOF || (err == nil && len(batch) == 0) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list %s in image: %w", p, err)
		}
	}
	sort.Strings(names)
	return names, nil
}

// isDir reports whether p resolves (inside the root) to a directory.
func (c *Context) isDir(p string) bool {
	fi, err := c.Root.Stat(p)
	return err == nil && fi.IsDir()
}

// glob expands an image-absolute pattern inside the root. Directories on
// the way are followed inside the root; the final component is not (a
// matched symlink is returned as itself).
func (c *Context) glob(pattern string) ([]string, error) {
	if err := checkGlob(pattern); err != nil {
		return nil, err
	}
	parts := strings.Split(strings.Trim(path.Clean(pattern), "/"), "/")
	cur := []string{"/"}
	for i, part := range parts {
		last := i == len(parts)-1
		var next []string
		for _, dir := range cur {
			var cands []string
			if hasMeta(part) {
				names, err := c.readDir(dir, true)
				if err != nil {
					return nil, err
				}
				for _, n := range names {
					if matchName(part, n) {
						cands = append(cands, path.Join(dir, n))
					}
				}
			} else {
				cands = []string{path.Join(dir, part)}
			}
			for _, p := range cands {
				if last {
					if ok, err := c.Root.Exists(p); err == nil && ok {
						next = append(next, p)
					} else if err != nil && !skippable(err) {
						return nil, err
					}
				} else if c.isDir(p) {
					next = append(next, p)
				}
			}
		}
		cur = next
		if len(cur) == 0 {
			return nil, nil
		}
	}
	return cur, nil
}

func devOf(fi fs.FileInfo) (uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Dev), true
}

// removeTree removes p and, if it is a directory, everything beneath it,
// reporting each path removed. Symlinks are removed, never followed. Kept
// paths survive (with their parent directories), and a directory on another
// filesystem than its parent (a mount point) is left alone.
func (c *Context) removeTree(p string) error {
	fi, err := c.Root.Lstat(p)
	if err != nil {
		if skippable(err) {
			return nil
		}
		return err
	}
	if c.kept(p) {
		return nil
	}
	if !fi.IsDir() {
		return c.removeOne(p)
	}
	if parent, err := c.Root.Stat(path.Dir(p)); err == nil {
		if d1, ok1 := devOf(parent); ok1 {
			if d2, ok2 := devOf(fi); ok2 && d1 != d2 {
				return nil
			}
		}
	}
	if err := c.emptyDir(p); err != nil {
		return err
	}
	err = c.Root.Remove(p)
	if err == nil {
		c.Report.add(c.op, p, Removed)
		return nil
	}
	if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
		return nil // holds a kept path or a mount point
	}
	return err
}

// emptyDir removes everything inside the directory p (not p itself).
func (c *Context) emptyDir(p string) error {
	names, err := c.readDir(p, false)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if c.ctx != nil {
			if err := c.ctx.Err(); err != nil {
				return err
			}
		}
		if err := c.removeTree(path.Join(p, n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeOne removes the non-directory p (a symlink as itself).
func (c *Context) removeOne(p string) error {
	if c.kept(p) {
		return nil
	}
	if err := c.Root.Remove(p); err != nil {
		if skippable(err) {
			return nil
		}
		return err
	}
	c.Report.add(c.op, p, Removed)
	return nil
}

// removeGlobs removes what the globs match: whole trees when trees is set,
// otherwise only non-directories (virt-sysprep's rm as opposed to rm -rf).
func (c *Context) removeGlobs(trees bool, globs ...string) error {
	var errs []error
	for _, g := range globs {
		matches, err := c.glob(g)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, m := range matches {
			if trees {
				err = c.removeTree(m)
			} else if fi, lerr := c.Root.Lstat(m); lerr == nil && !fi.IsDir() {
				err = c.removeOne(m)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// permOf is the part of a mode that WriteFile sets.
func permOf(fi fs.FileInfo) fs.FileMode {
	return fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// writeFile replaces p (a symlink at p is replaced, not followed) with
// data, reporting it as changed or created. Kept paths are left alone.
func (c *Context) writeFile(p string, data []byte, perm fs.FileMode) error {
	if c.kept(p) {
		return nil
	}
	existed, err := c.Root.Exists(p)
	if err != nil {
		return err
	}
	if err := c.Root.WriteFile(p, data, perm); err != nil {
		return err
	}
	if existed {
		c.Report.add(c.op, p, Changed)
	} else {
		c.Report.add(c.op, p, Created)
	}
	return nil
}

// regularFile returns p's content and mode when p is a regular file (not a
// symlink: an image symlink is not worth editing through).
func (c *Context) regularFile(p string) ([]byte, fs.FileMode, bool, error) {
	fi, err := c.Root.Lstat(p)
	if err != nil {
		if skippable(err) {
			return nil, 0, false, nil
		}
		return nil, 0, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, false, nil
	}
	f, err := c.Root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, false, fmt.Errorf("read %s in image: %w", p, err)
	}
	return data, permOf(fi), true, nil
}
