package cleanup

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// unmountTries is how often a busy mount is retried (killing processes
// rooted below it in between) before the lazy MNT_DETACH.
const unmountTries = 5

func releaseMount(e Entry) (string, error) {
	var err error
	for i := 0; i < unmountTries; i++ {
		mounted, merr := isMountPoint(e.Path)
		if merr != nil {
			return "", merr
		}
		if !mounted {
			if i == 0 {
				return fmt.Sprintf("%s already unmounted", e.Path), nil
			}
			return fmt.Sprintf("unmounted %s", e.Path), nil
		}
		err = unix.Unmount(e.Path, unix.UMOUNT_NOFOLLOW)
		if err == nil {
			return fmt.Sprintf("unmounted %s", e.Path), nil
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			continue // unmounted meanwhile? the next check tells
		}
		if !errors.Is(err, unix.EBUSY) {
			return "", fmt.Errorf("cleanup: unmounting %s (%s %s): %w", e.Path, e.FSType, e.Source, err)
		}
		// A chroot entry normally handles this; a process it missed (one
		// chrooted below the mount) is killed here.
		killRooted(e.Path, 2*time.Second)
		time.Sleep(200 * time.Millisecond)
	}
	if mounted, _ := isMountPoint(e.Path); !mounted {
		return fmt.Sprintf("unmounted %s", e.Path), nil
	}
	if derr := unix.Unmount(e.Path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); derr != nil {
		return "", fmt.Errorf("cleanup: unmounting %s (%s %s): %v; lazy unmount also failed: %w", e.Path, e.FSType, e.Source, err, derr)
	}
	return fmt.Sprintf("lazily unmounted %s: still busy after %d tries (%v); the filesystem stays alive until its last user goes", e.Path, unmountTries, err), nil
}

// mountPoints lists the mount points of this mount namespace.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cleanup: reading mount table: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, fstab.Unescape(fields[4]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cleanup: reading /proc/self/mountinfo: %w", err)
	}
	return out, nil
}

// IsMountPoint tells whether path (absolute, symlinks resolved) is a mount
// point in this mount namespace.
func IsMountPoint(path string) (bool, error) { return isMountPoint(path) }

func isMountPoint(path string) (bool, error) {
	mps, err := mountPoints()
	if err != nil {
		return false, err
	}
	for _, mp := range mps {
		if mp == path {
			return true, nil
		}
	}
	return false, nil
}

// MountPointsUnder lists the mount points at path (absolute, symlinks
// resolved) or below it in this mount namespace, in mountinfo's order
// (parents before children), each as /proc/self/mountinfo names it,
// unescaped. Errors: the mount table cannot be read.
func MountPointsUnder(path string) ([]string, error) { return mountPointsUnder(path) }

func mountPointsUnder(path string) ([]string, error) {
	mps, err := mountPoints()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mp := range mps {
		if under(mp, path) {
			out = append(out, mp)
		}
	}
	return out, nil
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// TakeMount journals a mount before it is made; it makes a Journal usable
// as the journal of a mounts.Stack.
func (j *Journal) TakeMount(target, source, fstype string) (func() error, error) {
	h, err := j.Take(MountEntry(target, source, fstype))
	if err != nil {
		return nil, err
	}
	return func() error { return j.Forget(h) }, nil
}
