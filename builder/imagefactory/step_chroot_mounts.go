package imagefactory

import (
	"context"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepChrootMounts mounts what commands in a chroot expect (proc, sysfs,
// a private /dev with this build's loop devices, a fresh devpts, /dev/shm,
// a tmpfs on /run) plus chroot_mounts. Its release first
// stops every process still running with its root in the image (daemons a
// provisioner left), so that nothing keeps the filesystems busy.
type stepChrootMounts struct {
	done bool
}

func (s *stepChrootMounts) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	sess := sessionOf(state)
	s.done = true // from here on, processes may exist and must be stopped
	mounted, err := sess.MountChroot(configOf(state).ChrootMounts)
	if err != nil {
		return halt(state, err)
	}
	state.Put(stateChrootMounts, mounted)
	uiOf(state).Say("Chroot mounts: " + strings.Join(mounted, ", "))
	return multistep.ActionContinue
}

func (s *stepChrootMounts) release(state multistep.StateBag) error {
	if !s.done {
		return nil
	}
	s.done = false
	return sessionOf(state).StopChrootProcesses()
}

func (s *stepChrootMounts) Cleanup(state multistep.StateBag) {
	if err := s.release(state); err != nil {
		uiOf(state).Error(err.Error())
	}
}
