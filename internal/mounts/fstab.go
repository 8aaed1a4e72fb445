package mounts

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fatstage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
)

// Skipped is an fstab entry MountFstab did not mount, and why.
type Skipped struct {
	Entry  fstab.Entry
	Reason string
	// Placeholder: an empty read-only placeholder stands at the mount
	// point, so writes below it fail (Stack.MountPlaceholder).
	Placeholder bool
}

func (s Skipped) String() string { return fmt.Sprintf("%s: %s", s.Entry.File, s.Reason) }

// MountFstab mounts the image's own fstab entries beneath the root, parents
// before children (stable sort by mount point depth, so /boot comes before
// /boot/efi and fstab order is kept otherwise).
//
// The root entry "/" is left out (MountRoot did it). Entries that are not
// disk filesystems (swap, proc, noauto... see fstab.Entry.Mountable) are
// skipped with their reason. resolve maps an entry to the device holding it
// (a loop device of one of the image's partitions); no device means
// skipped. A filesystem the kernel cannot mount (mount(2) says ENODEV, as
// for vfat on a kernel without it) is skipped too. Any skip of a mount
// point listed in required is an error instead, and so is a required mount
// point missing from the fstab.
//
// The fstab's options govern the booted system, not the builder: entries
// are mounted read-write (read-only with Stack.ReadOnly; nodev with Stack.NoDev) with kernel defaults, except btrfs subvol= and
// subvolid=, which choose what is mounted, and compress=, so files written
// are stored as the booted system would store them, and a FAT's owner and
// modes (FATMountData), so provisioners see the same ones whether the
// kernel mounts it or it is staged. Type "auto" (or a list such as
// "ext4,xfs") is probed with blkid. Missing mount point directories are
// created inside the image, as systemd would at boot; a mount that fails
// leaves none. Where the kernel cannot mount a filesystem of the image, an
// empty read-only placeholder is mounted instead (not with ReadOnly), and
// the directories made for it go at unmount.
func (s *Stack) MountFstab(entries []fstab.Entry, resolve func(fstab.Entry) (dev string, ok bool), required map[string]bool) ([]Skipped, error) {
	if s.root == nil {
		return nil, errors.New("mount fstab entries: no root mounted yet")
	}
	var todo []fstab.Entry
	seen := map[string]bool{}
	for _, e := range entries {
		seen[path.Clean(e.File)] = true
		if path.Clean(e.File) != "/" {
			todo = append(todo, e)
		}
	}
	for mp, req := range required {
		if req && !seen[path.Clean(mp)] {
			return nil, fmt.Errorf("mount point %s is required but the image's fstab has no entry for it", mp)
		}
	}
	slices.SortStableFunc(todo, func(a, b fstab.Entry) int { return a.Depth() - b.Depth() })

	var skipped []Skipped
	skip := func(e fstab.Entry, reason string) error {
		if required[e.File] || required[path.Clean(e.File)] {
			return fmt.Errorf("required mount point %s (fstab line %d: %s) cannot be mounted: %s", e.File, e.Line, e, reason)
		}
		skipped = append(skipped, Skipped{Entry: e, Reason: reason})
		return nil
	}
	kernelFS := KernelFilesystems()
	for _, e := range todo {
		if r := e.NotMountableReason(); r != "" {
			if err := skip(e, r); err != nil {
				return skipped, err
			}
			continue
		}
		dev, ok := resolve(e)
		if !ok {
			kind, val := e.Source()
			if err := skip(e, fmt.Sprintf("no device of the image matches %s %s", kind, val)); err != nil {
				return skipped, err
			}
			continue
		}
		fstype := e.VFSType
		if fstype == "auto" || strings.Contains(fstype, ",") {
			fs, err := Probe(dev)
			if err != nil {
				return skipped, fmt.Errorf("fstab entry %s: %w", e.File, err)
			}
			if fs.Type == "" {
				if err := skip(e, fmt.Sprintf("no filesystem found on %s", dev)); err != nil {
					return skipped, err
				}
				continue
			}
			fstype = fs.Type
		}
		var data []string
		if fstype == "btrfs" {
			for _, o := range e.Options {
				if strings.HasPrefix(o, "subvol=") || strings.HasPrefix(o, "subvolid=") || strings.HasPrefix(o, "compress") {
					data = append(data, o)
				}
			}
		}
		if s.ExtraData != nil && !s.ReadOnly {
			if d := s.ExtraData(fstype); d != "" {
				data = append(data, d)
			}
		}
		if fatstage.Types[fstype] {
			d, err := FATMountData(e.Options)
			if err != nil {
				return skipped, fmt.Errorf("fstab line %d (%s): %w", e.Line, e.File, err)
			}
			data = append(data, d)
		}
		var flags uintptr
		if s.ReadOnly {
			flags = unix.MS_RDONLY
		}
		if s.NoDev {
			flags |= unix.MS_NODEV
		}
		err := s.MountInRoot(dev, e.File, fstype, flags, strings.Join(data, ","))
		if errors.Is(err, unix.ENODEV) {
			reason := fmt.Sprintf("this kernel cannot mount %s filesystems", fstype)
			if kernelFS != nil && !kernelFS[fstype] {
				reason += " (not in /proc/filesystems)"
			}
			if s.Unmountable != nil {
				served, why, err := s.Unmountable(e, dev, fstype)
				if err != nil {
					return skipped, fmt.Errorf("fstab line %d (%s): %w", e.Line, e.File, err)
				}
				if served {
					continue
				}
				if why != "" {
					reason += "; " + why
				}
			}
			if err := skip(e, reason); err != nil {
				return skipped, err
			}
			// The filesystem is the image's: what a provisioner writes
			// there must not land in the parent filesystem instead.
			if !s.ReadOnly {
				if err := s.MountPlaceholder(e.File); err != nil {
					return skipped, fmt.Errorf("fstab line %d (%s): a read-only placeholder for the skipped mount: %w", e.Line, e.File, err)
				}
				skipped[len(skipped)-1].Placeholder = true
			}
			continue
		}
		if err != nil {
			return skipped, fmt.Errorf("fstab line %d (%s): %w", e.Line, e.File, err)
		}
	}
	return skipped, nil
}

// FATMountData is the mount(2) data of a FAT filesystem mounted for an
// fstab entry with options opts: "uid=U,gid=G,fmask=0MMM,dmask=0MMM", the
// owner and modes internal/fatstage gives the same entry when it stages
// it (its uid=, gid=, umask=, fmask=, dmask=, vfat(5); else root and the
// mask 022 of a mount by init), so that a provisioner sees the same modes
// on a kernel that mounts vfat as on one that does not. A malformed value
// is an error naming the option.
func FATMountData(opts []string) (string, error) {
	p, err := fatstage.PermsFromOptions(opts)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("uid=%d,gid=%d,fmask=%04o,dmask=%04o", p.UID, p.GID, uint32(p.FMask), uint32(p.DMask)), nil
}

// KernelFilesystems reads /proc/filesystems; nil if unreadable. It lists
// only the filesystems of the kernel and of its loaded modules: one whose
// module mount(2) would load on demand (vfat, on a stock Debian kernel) is
// not there yet.
func KernelFilesystems() map[string]bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			out[f[len(f)-1]] = true
		}
	}
	return out
}

// KernelMayMount reports whether this kernel mounts filesystems of type
// fstype, without mounting anything: listed in /proc/filesystems, or a
// module of the running kernel (/lib/modules/RELEASE/modules.dep or
// modules.builtin names fstype.ko, compressed or not) that mount(2) loads
// on demand, as a stock Debian kernel does vfat. known is false when
// neither /proc/filesystems nor the modules list could be read. For
// messages only: MountFstab decides by mount(2)'s ENODEV.
func KernelMayMount(fstype string) (yes, known bool) {
	var u unix.Utsname
	release := ""
	if unix.Uname(&u) == nil {
		release = unix.ByteSliceToString(u.Release[:])
	}
	return kernelMayMount(KernelFilesystems(), path.Join("/lib/modules", release), fstype)
}

func kernelMayMount(procFS map[string]bool, modules, fstype string) (yes, known bool) {
	if procFS[fstype] {
		return true, true
	}
	known = procFS != nil
	for _, list := range []string{"modules.dep", "modules.builtin"} {
		b, err := os.ReadFile(path.Join(modules, list))
		if err != nil {
			continue
		}
		known = true
		for _, line := range strings.Split(string(b), "\n") {
			mod, _, _ := strings.Cut(line, ":")
			name := path.Base(mod)
			if n, ok := strings.CutPrefix(name, fstype+".ko"); ok && (n == "" || strings.HasPrefix(n, ".")) {
				return true, true
			}
		}
	}
	return false, known
}
