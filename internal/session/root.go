package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/ext4repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
)

// rootCandidateTypes are the filesystems a Linux root is looked for on.
var rootCandidateTypes = map[string]bool{"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true}

// FindRoot picks the root filesystem: RootPartition if set, else the first
// filesystem with a root label, else the one partition holding /etc/fstab
// (each candidate mounted read-only for a look). On btrfs it also picks the
// subvolume (see lookBtrfs and RootSubvolume), whichever way the partition
// was found: the top level is never taken silently.
func (s *Session) FindRoot(ctx context.Context) (*Partition, error) {
	p, err := s.findRootPartition(ctx)
	if err != nil {
		return nil, err
	}
	if p.FS.Type == "btrfs" {
		if _, err := s.lookBtrfs(ctx, p); err != nil {
			s.Root = nil
			return nil, err
		}
	}
	return p, nil
}

func (s *Session) findRootPartition(ctx context.Context) (*Partition, error) {
	if n := s.opts.RootPartition; n > 0 {
		p := s.Partition(n)
		if p == nil {
			return nil, fmt.Errorf("root_partition %d does not exist; the disk has:\n%s", n, s.Describe())
		}
		if p.FS.Type == "" {
			return nil, fmt.Errorf("root_partition %d holds no filesystem", n)
		}
		if p.PV != nil {
			return nil, fmt.Errorf("root_partition %d is an LVM PV, not a filesystem: leave root_partition unset and the root is looked for in its LVs. The disk has:\n%s", n, s.Describe())
		}
		s.Root = p
		return p, nil
	}
	for _, label := range s.opts.RootLabels {
		for _, p := range s.Parts {
			if p.FS.Label == label && p.FS.Type != "" {
				s.Root = p
				return p, nil
			}
		}
	}
	var withFstab []*Partition
	for _, p := range s.Parts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !rootCandidateTypes[p.FS.Type] {
			continue
		}
		ok, err := s.holdsFstab(ctx, p)
		if err != nil {
			return nil, err
		}
		if ok {
			withFstab = append(withFstab, p)
		} else if s.looked[p] == "" {
			s.looked[p] = "no /etc/fstab at its top level"
		}
	}
	switch len(withFstab) {
	case 1:
		s.Root = withFstab[0]
		return s.Root, nil
	case 0:
		what := "set root_partition to the partition holding /"
		if !s.usable() {
			what = "no partition holds a filesystem the builder can use as the root"
		}
		return nil, fmt.Errorf("no root filesystem found: no filesystem is labelled %s and none holds /etc/fstab; "+
			"%s. The disk has:\n%s", strings.Join(s.opts.RootLabels, " or "), what, s.Describe())
	default:
		return nil, fmt.Errorf("%d partitions hold /etc/fstab; set root_partition to choose. The disk has:\n%s",
			len(withFstab), s.Describe())
	}
}

// holdsFstab mounts p read-only for a moment to look for /etc/fstab (in
// its subvolumes, on btrfs).
func (s *Session) holdsFstab(ctx context.Context, p *Partition) (bool, error) {
	var found bool
	var err error
	if p.FS.Type == "btrfs" {
		var look *btrfsLook
		if look, err = s.lookBtrfs(ctx, p); err == nil {
			found = look.found
			if !found {
				s.looked[p] = "no /etc/fstab at its top level, in its default subvolume or in any subvolume"
			}
		}
	} else {
		err = s.withProbeMount(p, probeOptions(p.FS.Type), func(st *mounts.Stack) error {
			fi, err := st.Root().Lstat("/etc/fstab")
			found = err == nil && fi.Mode().IsRegular()
			return nil
		})
	}
	if errors.Is(err, errProbeMount) {
		// Not mountable here: not our root.
		s.looked[p] = fmt.Sprintf("it does not mount here (%s)", strings.TrimPrefix(err.Error(), errProbeMount.Error()+": "))
		return false, nil
	}
	return found, err
}

// probeDir makes a fresh directory next to mount_path for a look.
func (s *Session) probeDir() (string, error) {
	// mount_path's parent may not exist yet (the default one, on a fresh
	// machine): MountRoot creates mount_path only later.
	if err := os.MkdirAll(filepath.Dir(s.opts.MountPath), 0o755); err != nil {
		return "", fmt.Errorf("creating the parent of mount_path %s: %w", s.opts.MountPath, err)
	}
	return os.MkdirTemp(filepath.Dir(s.opts.MountPath), "probe-")
}

// probeOptions keep a look from changing the filesystem: no journal
// replay, where the filesystem can skip it.
func probeOptions(fstype string) string {
	switch fstype {
	case "ext3", "ext4":
		return "noload"
	case "xfs":
		return "norecovery"
	}
	return ""
}

// MountRoot mounts the root filesystem at the mount path (created if
// missing).
func (s *Session) MountRoot() error {
	if s.Root == nil {
		return errors.New("no root filesystem chosen")
	}
	if err := s.claimMountPath(); err != nil {
		return err
	}
	var flags uintptr
	if s.opts.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	s.stack = mounts.NewStack(journalAdapter{s.opts.Journal})
	s.stack.Logf = s.logf
	s.stack.ReadOnly = s.opts.ReadOnly
	s.stack.Unmountable = s.unmountable
	s.stack.NoDev = s.opts.NoDev
	// mount_options as fstab writes them: noatime is a flag, not data.
	opts := append(s.btrfsRootData(), s.opts.MountOptions...)
	if s.reproducible() {
		s.stack.ExtraData = ext4repro.MountData
		if d := ext4repro.MountData(s.Root.FS.Type); d != "" {
			opts = append(opts, d)
		}
	}
	flags, data := mounts.SplitOptions(flags, opts)
	if s.opts.NoDev {
		flags |= unix.MS_NODEV // after mount_options: a "dev" there does not undo it
	}
	if err := s.stack.MountRoot(s.Root.Device, s.Root.FS.Type, s.opts.MountPath, flags, data); err != nil {
		s.stack = nil
		err = errors.Join(fmt.Errorf("mounting the root filesystem (%s) at %s: %w", s.Root, s.opts.MountPath, err), s.removeMountDir())
		s.releaseMountPath()
		return err
	}
	s.mountedAt[s.Root] = s.opts.MountPath
	s.rootFS = s.stack.Root()
	return s.wrote(s.Root)
}

// Unmount unmounts everything the session mounted, newest first, and
// removes the mount path it created.
func (s *Session) Unmount() error {
	s.rootFS = nil // closed by UnmountAll
	if s.stack == nil {
		return nil
	}
	err := s.stack.UnmountAll()
	if err == nil {
		s.stack = nil
		s.fats = nil
		clear(s.mountedAt)
		err = s.removeMountDir()
		s.releaseMountPath()
	}
	return err
}
