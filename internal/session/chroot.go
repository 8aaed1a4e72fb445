package session

import (
	"errors"
	"fmt"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
)

// MountChroot mounts what commands in a chroot expect (mounts'
// DefaultChrootMounts, with extra merged by target: [fstype, source,
// target]; fstype "none" removes a default). The private /dev gets a block
// node for each loop device the session holds (devNodes), and no other
// block device. Before the first mount it journals the chroot itself, so
// that whatever runs in it is stopped before anything is unmounted, even
// after a kill -9 of the build.
func (s *Session) MountChroot(extra [][]string) ([]string, error) {
	if s.stack == nil {
		return nil, errors.New("the root filesystem is not mounted")
	}
	var overrides []mounts.ChrootMount
	for i, m := range extra {
		if len(m) != 3 {
			return nil, fmt.Errorf("chroot_mounts[%d]: want [fstype, source, target], got %d values %q", i, len(m), m)
		}
		fstype := m[0]
		if fstype == "none" {
			fstype = "" // removes the default with that target
		}
		overrides = append(overrides, mounts.ChrootMount{FSType: fstype, Source: m[1], Target: m[2]})
	}
	list, err := mounts.MergeChrootMounts(mounts.DefaultChrootMounts(), overrides)
	if err != nil {
		return nil, fmt.Errorf("chroot_mounts: %w", err)
	}
	if !s.chrootTaken {
		h, err := s.opts.Journal.Take(cleanup.ChrootEntry(s.opts.MountPath))
		if err != nil {
			return nil, err
		}
		s.chroot, s.chrootTaken = h, true
	}
	nodes, err := s.devNodes()
	if err != nil {
		return nil, err
	}
	s.stack.DevNodes = nodes
	s.sandbox.mu.Lock()
	s.sandbox.hostDevs, s.sandbox.allHost = boundDevices(list)
	s.sandbox.mu.Unlock()
	if err := s.stack.MountChroot(list); err != nil {
		return nil, fmt.Errorf("chroot mounts: %w", err)
	}
	var done []string
	for _, m := range list {
		done = append(done, m.Target)
	}
	return done, nil
}

// BindFile binds a host file over a file in the image, until Unmount.
func (s *Session) BindFile(host, target string) error {
	if s.stack == nil {
		return errors.New("the root filesystem is not mounted")
	}
	return s.stack.Bind(host, target, true)
}

// StopChrootProcesses stops every process whose root is in the image
// (daemons a provisioner started, a command a cancel interrupted): those
// in the sandbox, each named in a warning (stopSandbox), then any other.
func (s *Session) StopChrootProcesses() error {
	err := s.stopSandbox()
	if !s.chrootTaken {
		return err
	}
	s.chrootTaken = false
	return errors.Join(err, s.opts.Journal.Release(s.chroot))
}

// devNodes are the block nodes of the session's loop devices (partitions
// and LVs), owned by the image's group "disk" (its /etc/group; else
// sandbox.DiskGID), so that grub-probe, update-grub and blkid in the chroot
// find the image's disk.
func (s *Session) devNodes() ([]sandbox.Node, error) {
	group, _ := s.rootFS.ReadFile("/etc/group") // none: the default gid
	gid := sandbox.GroupID(group, "disk", sandbox.DiskGID)
	devs := map[string]uint64{}
	for _, p := range s.Parts {
		if p.dev == nil {
			continue
		}
		rdev, err := p.dev.Rdev()
		if err != nil {
			return nil, fmt.Errorf("private /dev: %w", err)
		}
		devs[p.Device] = rdev
	}
	return sandbox.LoopNodes(devs, gid)
}
