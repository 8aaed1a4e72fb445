package selinux

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// Snapshot is what the tree looked like before a build changed it: a
// moment, and where each directory was. Every change to an inode (write,
// create, rename, link, chmod, chown, setxattr) sets its ctime to the
// kernel's clock (inode_set_ctime_current), on ext4, xfs and btrfs alike;
// nothing a process does can set a ctime back. A directory's ctime changes
// when its entries change, so a directory with a new ctime is not
// necessarily new: the snapshot tells a new or moved directory (its whole
// subtree has new paths) from one whose entries changed (its own path, and
// so its file context, did not).
type Snapshot struct {
	Since time.Time         // when taken; a later change has a later ctime
	dirs  map[string]fileID // image path -> directory
	skip  map[string]bool
	devs  map[uint64]bool // the image's filesystems
}

type fileID struct{ dev, ino uint64 }

// Changes are the paths of a tree changed since a Snapshot.
type Changes struct {
	// Paths to relabel, sorted: changed non-directories, and new or moved
	// directories (to be relabelled with everything beneath them).
	Paths []string
	// Trees counts the directories among Paths.
	Trees int
	// Walked is the number of inodes looked at.
	Walked int
}

// settle is how long Snap waits after taking its time (see Snap).
const settle = 25 * time.Millisecond

// Snap records the moment and the directories of the tree at root. skip
// lists image paths not to enter (the chroot's own mounts: /proc, /sys,
// /dev, /run), nor report later.
func Snap(root *inroot.Root, skip []string) (*Snapshot, error) {
	// Timestamps come from a coarse clock that lags the real one by up to
	// a tick (and, with multigrain timestamps, sometimes from the fine one):
	// any change made before now has ctime <= now; after waiting out more
	// than a tick (10 ms at HZ=100), any later change has ctime > now.
	since := time.Now()
	time.Sleep(settle)
	s := &Snapshot{Since: since, dirs: map[string]fileID{}, skip: map[string]bool{}}
	for _, p := range skip {
		s.skip[path.Clean("/"+p)] = true
	}
	var err error
	if s.devs, err = imageDevs(root.Path(), skip); err != nil {
		return nil, err
	}
	err = walk(root, s.skip, s.devs, func(p string, st *unix.Statx_t) bool {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			s.dirs[p] = idOf(st)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("listing the image's directories before the build: %w", err)
	}
	return s, nil
}

// Changed walks the tree again and returns what changed since s.
func (s *Snapshot) Changed(root *inroot.Root) (*Changes, error) {
	c := &Changes{}
	since := unix.NsecToTimespec(s.Since.UnixNano())
	err := walk(root, s.skip, s.devs, func(p string, st *unix.Statx_t) bool {
		c.Walked++
		changed := st.Ctime.Sec > since.Sec || (st.Ctime.Sec == since.Sec && int64(st.Ctime.Nsec) > since.Nsec)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if changed {
				c.Paths = append(c.Paths, p)
			}
			return false
		}
		if !changed {
			return true
		}
		if id, ok := s.dirs[p]; ok && id == idOf(st) {
			// Entries changed, the directory stayed: its context is a
			// function of its path and type, which did not change.
			return true
		}
		c.Paths = append(c.Paths, p)
		c.Trees++
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("finding what the build changed in the image: %w", err)
	}
	sort.Strings(c.Paths)
	return c, nil
}

func idOf(st *unix.Statx_t) fileID {
	return fileID{uint64(unix.Mkdev(st.Dev_major, st.Dev_minor)), st.Ino}
}

// walk calls visit for every inode under root but root itself, with its
// image path; visit returns whether to descend into a directory. It opens
// every directory relative to its parent's fd with O_NOFOLLOW, from names
// read in the directory: no symlink is ever followed, so the walk cannot
// leave the image. Paths in skip, and mounts of other filesystems than
// devs (a host directory or file bound in), are neither visited nor
// entered.
func walk(root *inroot.Root, skip map[string]bool, devs map[uint64]bool, visit func(p string, st *unix.Statx_t) bool) error {
	top, err := root.Open("/")
	if err != nil {
		return err
	}
	return walkDir(top, "/", skip, devs, visit)
}

// imageDevs are the devices of the filesystems mounted at and under root
// but skip: the image's.
func imageDevs(root string, skip []string) (map[uint64]bool, error) {
	mps, err := imageMounts(root, skip)
	if err != nil {
		return nil, err
	}
	devs := map[uint64]bool{}
	for _, p := range mps {
		var st unix.Stat_t
		if err := unix.Lstat(path.Join(root, p), &st); err != nil {
			return nil, fmt.Errorf("the image's filesystem at %s: %w", p, err)
		}
		devs[st.Dev] = true
	}
	return devs, nil
}

// walkDir reads dir (closing it) and recurses.
func walkDir(dir *os.File, p string, skip map[string]bool, devs map[uint64]bool, visit func(string, *unix.Statx_t) bool) error {
	var names []string
	for {
		batch, err := dir.Readdirnames(1024)
		names = append(names, batch...)
		if err == io.EOF || (err == nil && len(batch) == 0) {
			break
		}
		if err != nil {
			dir.Close()
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	defer dir.Close()
	fd := int(dir.Fd())
	for _, name := range names {
		child := path.Join(p, name)
		if skip[child] {
			continue
		}
		var st unix.Statx_t
		if err := unix.Statx(fd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT,
			unix.STATX_TYPE|unix.STATX_CTIME|unix.STATX_INO, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("%s: %w", child, err)
		}
		if !devs[idOf(&st).dev] {
			continue
		}
		if !visit(child, &st) || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("%s: %w", child, err)
		}
		if err := walkDir(os.NewFile(uintptr(cfd), child), child, skip, devs, visit); err != nil {
			return err
		}
	}
	return nil
}
