package mounts

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
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

// DefaultChrootMounts is what a chroot needs: proc, sysfs, the host's /dev
// and /dev/pts (the host's devpts instance, so /dev/ptmx opens a pty that
// /dev/pts shows) and a fresh tmpfs on /run.
func DefaultChrootMounts() []ChrootMount {
	return []ChrootMount{
		{FSType: "proc", Source: "proc", Target: "/proc"},
		{FSType: "sysfs", Source: "sysfs", Target: "/sys"},
		{FSType: "bind", Source: "/dev", Target: "/dev"},
		{FSType: "bind", Source: "/dev/pts", Target: "/dev/pts"},
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

// MountChroot mounts ms in order beneath the image root. It stops at the
// first failure; what was mounted stays in the stack for UnmountAll.
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
		if err := s.MountInRoot(src, m.Target, m.FSType, chrootFlags[m.FSType], m.Options); err != nil {
			return fmt.Errorf("chroot mounts: %w", err)
		}
	}
	return nil
}
