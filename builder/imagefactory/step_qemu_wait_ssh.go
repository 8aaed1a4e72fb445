package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// stepQemuWaitSSH is the SDK's communicator.StepConnect with a watchdog on
// the booting guest: a guest silent on its serial console and its disk for
// boot_stall_timeout, or a QEMU that exits, ends the wait at once with
// what the console showed, instead of "Timeout waiting for SSH" after
// ssh_timeout. The watchdog stops once SSH answers (pause_before_connecting
// may keep a healthy guest quiet).
type stepQemuWaitSSH struct {
	connect *communicator.StepConnect
}

func (s *stepQemuWaitSSH) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	m := machineOf(state)

	// StepConnect halts without an error when its context ends: the
	// watchdog ends it, then the watchdog's error is the build's.
	connectCtx, stopConnect := context.WithCancel(ctx)
	defer stopConnect()
	watchCtx, stopWatch := context.WithCancel(connectCtx)
	defer stopWatch()
	watched := make(chan error, 1)
	go func() {
		err := m.Watch(watchCtx, qemu.WatchOptions{Stall: cfg.BootStallTimeout, TailLines: consoleTailLines})
		if err != nil {
			stopConnect()
		}
		watched <- err
	}()
	go func() {
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-time.After(time.Second):
			}
			if _, ok := state.GetOk("communicator"); ok {
				stopWatch()
				return
			}
		}
	}()

	action := s.connect.Run(connectCtx, state)
	stopWatch()
	err := <-watched
	if action == multistep.ActionContinue || err == nil {
		return action
	}
	if _, cancelled := state.GetOk(multistep.StateCancelled); cancelled || ctx.Err() != nil {
		return action
	}
	var ge *qemu.GuestError
	if errors.As(err, &ge) && errors.Is(err, qemu.ErrStalled) {
		ge.Detail += " (boot_stall_timeout)"
	}
	return halt(state, fmt.Errorf("waiting for SSH: %w", err))
}

func (s *stepQemuWaitSSH) Cleanup(state multistep.StateBag) { s.connect.Cleanup(state) }
