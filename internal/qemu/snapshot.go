package qemu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// bootWatched are the image's paths a factory boot must leave as they were:
// the configuration the guest's network comes from, what cloud-init writes
// about the machine it ran on (sudoers for a created user, the installer's
// config), the resolver, the state network managers keep about the
// networks they met. An image booted in the factory must not adapt itself
// to the factory's hypervisor and network: it meets new ones in the cloud.
//
// A name ending in "/" is a tree (everything beneath it is recorded, and
// what appears in it is removed), a name with "*" in its last component a
// pattern (matches recorded, new matches removed), anything else one path.
var bootWatched = []string{
	"/etc/network/interfaces",
	"/etc/network/interfaces.d/",
	"/etc/systemd/network/",
	"/etc/netplan/",
	"/etc/NetworkManager/system-connections/",
	"/etc/NetworkManager/conf.d/",
	"/etc/sysconfig/network",
	"/etc/sysconfig/network-scripts/ifcfg-*",
	"/etc/udev/rules.d/*persistent-net*",
	"/etc/resolv.conf",
	"/etc/sudoers.d/90-cloud-init-users",
	"/etc/cloud/cloud.cfg.d/99-installer.cfg",
	"/var/lib/NetworkManager/",
	"/var/lib/wicked/",
}

// maxSnapshotFile bounds what one recorded file may hold: configuration
// is small, and the image is untrusted input.
const maxSnapshotFile = 4 << 20

// kinds of recorded entries.
const (
	kindMissing = iota
	kindFile
	kindDir
	kindLink
	kindOther // a device, a socket, a file too large: kept as the boot leaves it
)

// entry is one path as it was before the boot.
type entry struct {
	kind         int
	data         []byte // a file's content
	target       string // a symlink's
	mode         fs.FileMode
	uid, gid     int
	atime, mtime time.Time
}

// dirTimes is a directory that holds watched paths without being watched
// itself (/etc for /etc/resolv.conf): its times go back after the boot
// when it holds the same names as before, so that taking out what the
// boot added leaves no trace either.
type dirTimes struct {
	names        []string
	atime, mtime time.Time
}

// snapshot is what the watched paths held before the boot. restore puts
// exactly that back.
type snapshot struct {
	entries  map[string]*entry
	trees    map[string]bool // watched trees (their new entries are removed)
	patterns []string
	parents  map[string]*dirTimes
	Warnings []string
}

func newSnapshot() *snapshot {
	return &snapshot{entries: map[string]*entry{}, trees: map[string]bool{}, parents: map[string]*dirTimes{}}
}

// watch records each spec (bootWatched's syntax) as the image holds it now.
func (s *snapshot) watch(root *inroot.Root, specs ...string) error {
	for _, spec := range specs {
		var err error
		switch {
		case strings.HasSuffix(spec, "/"):
			p := path.Clean(spec)
			s.trees[p] = true
			if err = s.record(root, p, true); err == nil {
				err = s.recordParent(root, path.Dir(p))
			}
		case strings.Contains(path.Base(spec), "*"):
			s.patterns = append(s.patterns, spec)
			var ms []string
			if ms, err = globIn(root, spec); err == nil {
				for _, m := range ms {
					if err = s.record(root, m, false); err != nil {
						break
					}
				}
			}
			if err == nil {
				err = s.recordParent(root, path.Dir(spec))
			}
		default:
			if err = s.record(root, spec, false); err == nil {
				err = s.recordParent(root, path.Dir(spec))
			}
		}
		if err != nil {
			return fmt.Errorf("recording %s before the boot: %w", spec, err)
		}
	}
	return nil
}

// track records p, about to be written by the build, as it is now; when
// some of its parents are missing too it records the topmost missing one,
// so that the directories the build makes for p are removed again. (A
// watched path records no missing parents: a provisioner may make them.)
func (s *snapshot) track(root *inroot.Root, p string) error {
	top := path.Clean(p)
	for {
		parent := path.Dir(top)
		if parent == top {
			break
		}
		ok, err := root.Exists(parent)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		top = parent
	}
	if err := s.record(root, top, false); err != nil {
		return err
	}
	return s.recordParent(root, path.Dir(top))
}

// record notes p (and, for a directory in a tree, everything beneath it).
func (s *snapshot) record(root *inroot.Root, p string, tree bool) error {
	if _, done := s.entries[p]; done {
		return nil
	}
	fi, err := root.Lstat(p)
	if isMissing(err) {
		s.entries[p] = &entry{kind: kindMissing}
		return nil
	}
	if err != nil {
		return err
	}
	e := &entry{mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.uid, e.gid = int(st.Uid), int(st.Gid)
		e.atime, e.mtime = time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())
	}
	s.entries[p] = e
	switch {
	case fi.Mode().IsRegular() && fi.Size() > maxSnapshotFile:
		e.kind = kindOther
		s.Warnings = append(s.Warnings, fmt.Sprintf("%s is larger than %d MiB: not recorded, the boot may change it", p, maxSnapshotFile>>20))
	case fi.Mode().IsRegular():
		e.kind = kindFile
		if e.data, err = root.ReadFile(p); err != nil {
			return err
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		e.kind = kindLink
		if e.target, err = root.Readlink(p); err != nil {
			return err
		}
	case fi.IsDir():
		e.kind = kindDir
		if !tree {
			return nil
		}
		names, err := readDirNames(root, p)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := s.record(root, path.Join(p, n), true); err != nil {
				return err
			}
		}
	default:
		e.kind = kindOther
	}
	return nil
}

// recordParent notes the names and times of dir, which holds watched paths.
func (s *snapshot) recordParent(root *inroot.Root, dir string) error {
	if _, done := s.parents[dir]; done || s.entries[dir] != nil {
		return nil
	}
	fi, err := root.Lstat(dir)
	if isMissing(err) || (err == nil && !fi.IsDir()) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := readDirNames(root, dir)
	if err != nil {
		return err
	}
	sort.Strings(names)
	st := fi.Sys().(*syscall.Stat_t)
	s.parents[dir] = &dirTimes{names: names, atime: time.Unix(st.Atim.Unix()), mtime: time.Unix(st.Mtim.Unix())}
	return nil
}

// restore puts every recorded path back as it was (content, mode, owner,
// symlink target, and times when it had to be rewritten), removes what
// appeared in the watched trees and patterns, and reports each change
// under op. A second restore finds nothing to do.
func (s *snapshot) restore(root *inroot.Root, op string) ([]scrub.Change, error) {
	var changes []scrub.Change
	var errs []error
	note := func(p string, a scrub.Action, err error) {
		if err != nil {
			errs = append(errs, err)
		} else if a != "" {
			changes = append(changes, scrub.Change{Op: op, Path: p, Action: a})
		}
	}

	// What appeared: new entries in the trees, new pattern matches.
	var fresh []string
	for p := range s.trees {
		fresh = append(fresh, s.appeared(root, p)...)
	}
	for _, pat := range s.patterns {
		ms, err := globIn(root, pat)
		errs = append(errs, err)
		for _, m := range ms {
			if _, ok := s.entries[m]; !ok {
				fresh = append(fresh, m)
			}
		}
	}
	sort.Strings(fresh)
	for _, p := range fresh {
		note(p, scrub.Removed, root.RemoveAll(p))
	}

	// Parents first: a directory the boot replaced is back before its
	// entries are.
	paths := make([]string, 0, len(s.entries))
	for p := range s.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		a, err := s.entries[p].putBack(root, p)
		note(p, a, err)
	}

	// Directory times last, deepest first: every change beneath them is done.
	for i := len(paths) - 1; i >= 0; i-- {
		if e := s.entries[paths[i]]; e.kind == kindDir {
			errs = append(errs, setTimes(root, paths[i], e.atime, e.mtime))
		}
	}
	for dir, d := range s.parents {
		names, err := readDirNames(root, dir)
		if err != nil {
			continue
		}
		sort.Strings(names)
		if slices.Equal(names, d.names) {
			errs = append(errs, setTimes(root, dir, d.atime, d.mtime))
		}
	}
	return changes, errors.Join(errs...)
}

// appeared lists what is in the tree at p now and was not before.
func (s *snapshot) appeared(root *inroot.Root, p string) []string {
	if e := s.entries[p]; e == nil || e.kind != kindDir {
		return nil // missing before: putBack removes it whole
	}
	fi, err := root.Lstat(p)
	if err != nil || !fi.IsDir() {
		return nil
	}
	names, err := readDirNames(root, p)
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range names {
		c := path.Join(p, n)
		if _, ok := s.entries[c]; !ok {
			out = append(out, c)
		} else {
			out = append(out, s.appeared(root, c)...)
		}
	}
	return out
}

// putBack makes p what e recorded; it returns the change made, or "".
func (e *entry) putBack(root *inroot.Root, p string) (scrub.Action, error) {
	fi, err := root.Lstat(p)
	missing := isMissing(err)
	if err != nil && !missing {
		return "", err
	}
	if e.kind == kindMissing {
		if missing {
			return "", nil
		}
		return scrub.Removed, root.RemoveAll(p)
	}
	if e.kind == kindOther {
		return "", nil
	}
	action := scrub.Changed
	if missing {
		action = scrub.Created
	} else if e.same(root, p, fi) {
		return "", nil
	}
	switch e.kind {
	case kindDir:
		if !missing && !fi.IsDir() {
			if err := root.RemoveAll(p); err != nil {
				return "", err
			}
		}
		if missing || !fi.IsDir() {
			if err := root.Mkdir(p, 0o700); err != nil {
				return "", err
			}
		}
		if err := root.Lchown(p, e.uid, e.gid); err != nil {
			return "", err
		}
		return action, root.Chmod(p, e.mode)
	case kindLink:
		if !missing {
			if err := root.RemoveAll(p); err != nil {
				return "", err
			}
		}
		if err := root.Symlink(e.target, p); err != nil {
			return "", err
		}
		if err := root.Lchown(p, e.uid, e.gid); err != nil {
			return "", err
		}
	case kindFile:
		if err := e.writeBack(root, p, fi); err != nil {
			return "", err
		}
	}
	return action, setTimes(root, p, e.atime, e.mtime)
}

// same: p (described by fi) is what e recorded, times aside.
func (e *entry) same(root *inroot.Root, p string, fi fs.FileInfo) bool {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil || int(st.Uid) != e.uid || int(st.Gid) != e.gid {
		return false
	}
	switch e.kind {
	case kindDir:
		return fi.IsDir() && fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == e.mode
	case kindLink:
		t, err := root.Readlink(p)
		return fi.Mode()&fs.ModeSymlink != 0 && err == nil && t == e.target
	case kindFile:
		if !fi.Mode().IsRegular() || fi.Size() != int64(len(e.data)) || fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != e.mode {
			return false
		}
		data, err := root.ReadFile(p)
		return err == nil && string(data) == string(e.data)
	}
	return false
}

// writeBack rewrites a file with its recorded content, owner and mode: in
// place when it is still a regular file (its inode, links and extended
// attributes such as an SELinux label are kept), else as a new file.
func (e *entry) writeBack(root *inroot.Root, p string, fi fs.FileInfo) error {
	if fi != nil && fi.Mode().IsRegular() {
		f, err := root.OpenFile(p, os.O_WRONLY|os.O_TRUNC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		_, err = f.Write(e.data)
		if err == nil {
			err = f.Chown(e.uid, e.gid)
		}
		if err == nil { // after chown, which clears setuid and setgid
			err = f.Chmod(e.mode)
		}
		return errors.Join(err, f.Close())
	}
	if fi != nil {
		if err := root.RemoveAll(p); err != nil {
			return err
		}
	}
	if err := root.WriteFile(p, e.data, e.mode); err != nil {
		return err
	}
	if err := root.Lchown(p, e.uid, e.gid); err != nil {
		return err
	}
	return root.Chmod(p, e.mode)
}

// setTimes puts p's times back when they differ (a symlink's own).
func setTimes(root *inroot.Root, p string, atime, mtime time.Time) error {
	fi, err := root.Lstat(p)
	if err != nil {
		return nil // gone: nothing to put back
	}
	if fi.ModTime().Equal(mtime) {
		return nil
	}
	return root.Chtimes(p, atime, mtime)
}

// isMissing: err says a name is not in the image (or a component of it
// is not a directory).
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
