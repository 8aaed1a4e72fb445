package elements

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Tree is the merged hooks tree of a set of elements (DIB's
// TMP_HOOKS_PATH, seen in the image as /tmp/in_target.d).
type Tree struct {
	Dir string
	// Owner names the element each top-level entry of a subdirectory came
	// from: "install.d/50-foo" -> "foo".
	Owner map[string]string
}

// BuildTree merges the elements into dir as DIB's generate_hooks does
// (lib/common-functions): every subdirectory of every element except
// tests and __pycache__, entry by entry; an entry that is already a file
// in the tree (the same script in two elements) is an error, directories
// merge and deeper files overwrite; the element's own top-level files
// (element-deps, pkg-map...) are copied to the root of the tree. Names
// starting with a dot are not copied (DIB lists with ls).
func BuildTree(dir string, els []*Element) (*Tree, error) {
	t := &Tree{Dir: dir, Owner: map[string]string{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, e := range els {
		ents, err := os.ReadDir(e.Path)
		if err != nil {
			return nil, fmt.Errorf("element %s: %w", e.Name, err)
		}
		for _, de := range ents {
			src := filepath.Join(e.Path, de.Name())
			fi, err := os.Stat(src) // find -follow
			if err != nil {
				continue
			}
			if fi.IsDir() {
				if de.Name() == "tests" || de.Name() == "__pycache__" {
					continue
				}
				if err := t.mergeDir(e, de.Name(), src); err != nil {
					return nil, err
				}
				continue
			}
			if fi.Mode().IsRegular() && !strings.HasSuffix(de.Name(), ".pyc") {
				if err := copyAll(src, filepath.Join(dir, de.Name())); err != nil {
					return nil, fmt.Errorf("element %s: %w", e.Name, err)
				}
			}
		}
	}
	return t, nil
}

// mergeDir is DIB's copy_hooks_not_overwrite.
func (t *Tree) mergeDir(e *Element, sub, src string) error {
	dst := filepath.Join(t.Dir, sub)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("element %s: %w", e.Name, err)
	}
	for _, de := range ents {
		if strings.HasPrefix(de.Name(), ".") {
			continue
		}
		key := sub + "/" + de.Name()
		d := filepath.Join(dst, de.Name())
		if fi, err := os.Stat(d); err == nil && fi.Mode().IsRegular() {
			return fmt.Errorf("duplicate hook %s: in element %s and in element %s", key, t.Owner[key], e.Name)
		}
		if err := copyAll(filepath.Join(src, de.Name()), d); err != nil {
			return fmt.Errorf("element %s: %w", e.Name, err)
		}
		if _, ok := t.Owner[key]; !ok {
			t.Owner[key] = e.Name
		}
	}
	return nil
}

// copyAll is `cp -a src dst`: links stay links, directories merge into an
// existing one, files overwrite, modes are kept.
func copyAll(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if old, err := os.Lstat(dst); err == nil {
			if old.IsDir() {
				return fmt.Errorf("cannot overwrite directory %s with a link", dst)
			}
			os.Remove(dst)
		}
		return os.Symlink(target, dst)
	case fi.IsDir():
		if old, err := os.Lstat(dst); err == nil && !old.IsDir() {
			return fmt.Errorf("cannot overwrite non-directory %s with a directory", dst)
		}
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, de := range ents {
			if err := copyAll(filepath.Join(src, de.Name()), filepath.Join(dst, de.Name())); err != nil {
				return err
			}
		}
		return os.Chmod(dst, fi.Mode().Perm())
	case fi.Mode().IsRegular():
		return copyFile(src, dst, fi.Mode().Perm())
	}
	return nil // sockets, fifos: DIB's cp would copy them; elements have none
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if old, err := os.Lstat(dst); err == nil && old.Mode()&os.ModeSymlink != 0 {
		os.Remove(dst)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(perm); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
