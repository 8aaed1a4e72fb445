package mounts

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
)

// ChrootMount is one mount the chroot needs to run programs, as in
// packer-plugin-amazon's chroot_mounts.
type ChrootMount struct {
	// FSType is a kernel filesystem type (proc, sysfs, tmpfs, devpts...) or
	// "bind" for a bind of the host path Source.
	FSType string
	// Source is mount(2)'s source: the host path for "bind"; for the
	// others it is only a name in mountinfo and defaults to FSType.
	Source string
	// Target is an absolute path inside the image.
	Target string
	// Options is mount(2)'s data string ("mode=0755"); for "bind" the only
	// option understood is "ro".
	Options string
}

// PrivateDevSource is the source name of the private /dev's tmpfs, as
// /proc/mounts in the chroot shows it. A chroot mount of a tmpfs with this
// source on /dev is populated with sandbox.CharDevices, sandbox.Links and
// the stack's DevNodes, and sandbox.Dirs (MountChroot).
const PrivateDevSource = "imagefactory-dev"

// DefaultChrootMounts is what a chroot needs: proc, sysfs, a private /dev
// (a fresh tmpfs holding only the nodes internal/sandbox lists and this
// build's loop devices, never the host's /dev), a fresh devpts instance on
// /dev/pts, a tmpfs on /dev/shm for POSIX shared memory and semaphores,
// and a fresh tmpfs on /run. Modes and options as systemd-nspawn's
// mount_all: /dev mode=0755, devpts
// newinstance,ptmxmode=0666,mode=620,gid=5 (tty's gid on every
// distribution), /dev/shm mode=1777; sizes as its TMPFS_LIMITS_PRIVATE_DEV
// (size=4m,nr_inodes=64k: device nodes take no data). /dev/mqueue is not
// here: it belongs to an IPC namespace and is mounted inside it.
func DefaultChrootMounts() []ChrootMount {
	return []ChrootMount{
		{FSType: "proc", Source: "proc", Target: "/proc"},
		{FSType: "sysfs", Source: "sysfs", Target: "/sys"},
		{FSType: "tmpfs", Source: PrivateDevSource, Target: "/dev", Options: "mode=0755,size=4m,nr_inodes=64k"},
		{FSType: "devpts", Source: "devpts", Target: "/dev/pts", Options: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{FSType: "tmpfs", Source: "tmpfs", Target: "/dev/shm", Options: "mode=1777"},
		{FSType: "tmpfs", Source: "tmpfs", Target: "/run", Options: "mode=0755"},
	}
}

// MergeChrootMounts applies a user's overrides to base. Unlike
// packer-plugin-amazon, where chroot_mounts replaces the whole list, an
// override is matched to base by Target: it replaces the mount with the
// same target, an override with an empty FSType removes it, and one with a
// new target is added. The result is sorted by target depth (stable), so
// /dev is mounted before /dev/pts whatever the order given.
func MergeChrootMounts(base, overrides []ChrootMount) ([]ChrootMount, error) {
	out := slices.Clone(base)
	for _, o := range overrides {
		if !strings.HasPrefix(o.Target, "/") {
			return nil, fmt.Errorf("chroot mount %q: the target must be an absolute path inside the image", o.Target)
		}
		o.Target = path.Clean(o.Target)
		if o.Target == "/" {
			return nil, fmt.Errorf("chroot mount of %s: cannot mount over the image root", o.FSType)
		}
		i := slices.IndexFunc(out, func(m ChrootMount) bool { return path.Clean(m.Target) == o.Target })
		switch {
		case o.FSType == "" && i >= 0:
			out = slices.Delete(out, i, i+1)
		case o.FSType == "":
			// Removing a mount that is not there: nothing to do.
		case i >= 0:
			out[i] = o
		default:
			out = append(out, o)
		}
	}
	for i := range out {
		if out[i].Source == "" {
			if out[i].FSType == "bind" {
				return nil, fmt.Errorf("chroot bind mount on %s: source (a host path) is missing", out[i].Target)
			}
			out[i].Source = out[i].FSType
		}
	}
	slices.SortStableFunc(out, func(a, b ChrootMount) int { return depth(a.Target) - depth(b.Target) })
	return out, nil
}

func depth(p string) int {
	c := path.Clean("/" + p)
	if c == "/" {
		return 0
	}
	return strings.Count(c, "/")
}

// chrootFlags are the mount flags a pseudo filesystem gets in a chroot.
var chrootFlags = map[string]uintptr{
	"proc":   unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC,
	"sysfs":  unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC,
	"tmpfs":  unix.MS_NOSUID | unix.MS_NODEV,
	"devpts": unix.MS_NOSUID | unix.MS_NOEXEC,
	"mqueue": unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC,
}

// privateDevFlags are the private /dev's: not nodev (its nodes are its
// point), nosuid and strictatime as nspawn's.
const privateDevFlags = unix.MS_NOSUID | unix.MS_STRICTATIME

// IsPrivateDev says whether m is the private /dev MountChroot populates.
func (m ChrootMount) IsPrivateDev() bool {
	return m.FSType == "tmpfs" && m.Source == PrivateDevSource && path.Clean(m.Target) == "/dev"
}

// MountChroot mounts ms in order beneath the image root. It stops at the
// first failure; what was mounted stays in the stack for UnmountAll. The
// private /dev (IsPrivateDev) gets its nodes and links right after it is
// mounted, through the mount point reopened and checked by OpenMount: a
// /dev that is a symlink in the image was resolved inside the root.
func (s *Stack) MountChroot(ms []ChrootMount) error {
	for _, m := range ms {
		if m.FSType == "bind" {
			if m.Options != "" && m.Options != "ro" {
				return fmt.Errorf("chroot bind mount of %s on %s: unknown option %q (only \"ro\")", m.Source, m.Target, m.Options)
			}
			if err := s.Bind(m.Source, m.Target, m.Options == "ro"); err != nil {
				return fmt.Errorf("chroot mounts: %w", err)
			}
			continue
		}
		src := m.Source
		if src == "" {
			src = m.FSType
		}
		flags := chrootFlags[m.FSType]
		if m.IsPrivateDev() {
			flags = privateDevFlags
		}
		if err := s.MountInRoot(src, m.Target, m.FSType, flags, m.Options); err != nil {
			return fmt.Errorf("chroot mounts: %w", err)
		}
		if m.IsPrivateDev() {
			if err := s.populateDev(); err != nil {
				return fmt.Errorf("chroot mounts: %w", err)
			}
		}
	}
	return nil
}

// populateDev fills the private /dev just mounted (the stack's last mount).
func (s *Stack) populateDev() error {
	dir, err := s.OpenMount(s.mounts[len(s.mounts)-1].host)
	if err != nil {
		return err
	}
	defer dir.Close()
	return sandbox.Populate(dir, append(slices.Clone(sandbox.CharDevices), s.DevNodes...), sandbox.Links, sandbox.Dirs)
}
