package session

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
)

// stopGrace is how long processes left in the chroot get between SIGTERM
// and SIGKILL.
const stopGrace = 2 * time.Second

// sandboxState is the session's running sandbox, if any.
type sandboxState struct {
	mu  sync.Mutex
	box *sandbox.Sandbox
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
	box, err := sandbox.Start(s.MountPath(), "")
	if err != nil {
		return nil, err
	}
	s.sandbox.box = box
	return box, nil
}

// stopSandbox ends the sandbox, if one runs, after a warning naming each
// process still in it: its PID (the host's and the chroot's), command
// line and how long it ran.
func (s *Session) stopSandbox() error {
	s.sandbox.mu.Lock()
	box := s.sandbox.box
	s.sandbox.box = nil
	s.sandbox.mu.Unlock()
	if box == nil {
		return nil
	}
	_, err := box.Stop(stopGrace, func(p sandbox.Process) {
		s.warnf("stopping a process left in the chroot: %s", p)
	})
	if err != nil {
		return fmt.Errorf("stopping the chroot's processes: %w", err)
	}
	return nil
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
// the host PID of the sandbox's init, 0 when none runs.
func (s *Session) KeepSandbox() (int, error) {
	s.sandbox.mu.Lock()
	defer s.sandbox.mu.Unlock()
	box := s.sandbox.box
	if box == nil {
		return 0, nil
	}
	if err := box.Keep(); err != nil {
		return 0, err
	}
	return box.InitPID(), nil
}
