package session

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
)

// stopGrace is how long processes left in the chroot get between SIGTERM
// and SIGKILL.
const stopGrace = 2 * time.Second

// sandboxState is the session's running sandbox, if any, and its device
// cgroup with the journal's handle of it.
type sandboxState struct {
	mu     sync.Mutex
	box    *sandbox.Sandbox
	cg     *sandbox.Cgroup
	cgH    cleanup.Handle
	starts int  // sandboxes started, for the cgroup's name
	kept   bool // KeepSandbox: the cgroup stays, for the reap
	// What chroot_mounts binds of the host's devices (boundDevices).
	hostDevs []sandbox.Device
	allHost  string
}

// boundDevices are the host devices that chroot mounts bind into the
// image, which the device allow-list then allows too: a device node bound
// (["bind", "/dev/kvm", "/dev/kvm"]) adds its number; a bind of the host's
// /dev, or of a directory in it, asks for every host device, and all
// names it (the list is off: nothing else could tell which device the
// build wants).
func boundDevices(list []mounts.ChrootMount) (devs []sandbox.Device, all string) {
	for _, m := range list {
		if m.FSType != "bind" {
			continue
		}
		src := filepath.Clean(m.Source)
		if real, err := filepath.EvalSymlinks(src); err == nil {
			src = real
		}
		var st unix.Stat_t
		if unix.Stat(src, &st) != nil {
			continue // the bind itself says why
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR, unix.S_IFBLK:
			devs = append(devs, sandbox.Device{Block: st.Mode&unix.S_IFMT == unix.S_IFBLK, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)})
		case unix.S_IFDIR:
			if src == "/dev" || strings.HasPrefix(src, "/dev/") {
				all = m.Source + " on " + m.Target
			}
		}
	}
	return devs, all
}

// Sandbox returns the chroot's sandbox (its own mount, PID and IPC
// namespaces, rooted in the image; internal/sandbox), starting it on
// first use, after the chroot mounts: every command of the chroot runs in
// it (Sandbox.EnterArgs). StopChrootProcesses ends it; a later call
// starts a new one (the SELinux relabel runs after the provisioners'
// processes are stopped).
func (s *Session) Sandbox() (*sandbox.Sandbox, error) {
	s.sandbox.mu.Lock()
	defer s.sandbox.mu.Unlock()
	if s.sandbox.box != nil {
		return s.sandbox.box, nil
	}
	if s.stack == nil {
		return nil, errors.New("the image is not mounted: no chroot to run in")
	}
	if !s.chrootTaken {
		// Processes again after StopChrootProcesses (the relabel): the
		// journal's backstop again too.
		h, err := s.opts.Journal.Take(cleanup.ChrootEntry(s.opts.MountPath))
		if err != nil {
			return nil, err
		}
		s.chroot, s.chrootTaken = h, true
	}
	cg, err := s.deviceCgroup()
	if err != nil {
		return nil, err
	}
	box, err := sandbox.Start(s.MountPath(), "", cg)
	if err != nil {
		return nil, errors.Join(err, s.removeCgroup())
	}
	s.sandbox.box = box
	return box, nil
}

// deviceCgroup makes the sandbox's cgroup, journaled first, whose device
// filter allows the private /dev's nodes and this build's loop devices
// only (sandbox.AllowedDevices). Where the host has no cgroup v2 or
// refuses the BPF program (a container without CAP_SYS_ADMIN or CAP_BPF,
// say), the sandbox runs without it and a warning says what that leaves
// open: nil, nil. The caller holds s.sandbox.mu.
func (s *Session) deviceCgroup() (*sandbox.Cgroup, error) {
	if s.sandbox.allHost != "" {
		s.logf("the chroot's device allow-list is off: chroot_mounts binds the host's devices (%s)", s.sandbox.allHost)
		return nil, nil
	}
	without := func(err error) {
		s.warnf("the chroot runs without its device allow-list (%v): a root process in it can make and open a node of any host device", err)
	}
	s.sandbox.starts++
	dir, err := cleanup.CgroupDir(fmt.Sprintf("%d-%d", os.Getpid(), s.sandbox.starts))
	if err != nil {
		without(err)
		return nil, nil
	}
	h, err := s.opts.Journal.Take(cleanup.CgroupEntry(dir))
	if err != nil {
		return nil, err
	}
	cg, err := sandbox.NewCgroup(dir, append(sandbox.AllowedDevices(s.stack.DevNodes), s.sandbox.hostDevs...))
	if err != nil {
		without(err)
		return nil, s.opts.Journal.Release(h)
	}
	s.sandbox.cg, s.sandbox.cgH = cg, h
	return cg, nil
}

// removeCgroup kills what is left in the sandbox's cgroup and removes it,
// through the journal. The caller holds s.sandbox.mu or owns the state.
func (s *Session) removeCgroup() error {
	cg := s.sandbox.cg
	if cg == nil || s.sandbox.kept {
		return nil
	}
	s.sandbox.cg = nil
	cg.Close()
	return s.opts.Journal.Release(s.sandbox.cgH)
}

// stopSandbox ends the sandbox, if one runs, after a warning naming each
// process still in it: its PID (the host's and the chroot's), command
// line and how long it ran.
func (s *Session) stopSandbox() error {
	s.sandbox.mu.Lock()
	defer s.sandbox.mu.Unlock()
	box := s.sandbox.box
	s.sandbox.box = nil
	if box == nil {
		return s.removeCgroup()
	}
	_, err := box.Stop(stopGrace, func(p sandbox.Process) {
		s.warnf("stopping a process still running in the chroot: %s", p)
	})
	if err != nil {
		err = fmt.Errorf("stopping the chroot's processes: %w", err)
	}
	return errors.Join(err, s.removeCgroup())
}

func (s *Session) warnf(format string, a ...any) {
	if s.opts.Warn != nil {
		s.opts.Warn(fmt.Sprintf(format, a...))
		return
	}
	s.logf(format, a...)
}

// KeepSandbox leaves the sandbox running, processes and all, when the
// build is kept for inspection: the journal's chroot entry (processes
// rooted in the image, init among them) is what stops it then. It returns
// the host PID of the sandbox's init, 0 when none runs, and the cgroup its
// processes live in under the device filter ("" without one): a process
// entering the namespaces joins it by writing its PID to cgroup.procs
// there (nsenter --cgroup enters the namespace, not the cgroup).
func (s *Session) KeepSandbox() (pid int, cgroup string, err error) {
	s.sandbox.mu.Lock()
	defer s.sandbox.mu.Unlock()
	box := s.sandbox.box
	if box == nil {
		return 0, "", nil
	}
	if err := box.Keep(); err != nil {
		return 0, "", err
	}
	s.sandbox.kept = true
	if s.sandbox.cg != nil {
		cgroup = s.sandbox.cg.InnerDir()
	}
	return box.InitPID(), cgroup, nil
}
