package imagefactory

import (
	"context"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepChrootCommunicator hands provisioners a communicator that runs their
// commands in the chroot, and exposes the mount path as generated data.
type stepChrootCommunicator struct{}

func (s *stepChrootCommunicator) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	sess := sessionOf(state)
	state.Put("communicator", &Communicator{
		Root:    sess.RootFS(),
		Wrapper: cfg.wrapper(),
		Env:     chrootEnv(cfg.Environment),
		Sandbox: sess.Sandbox,
	})
	putGenerated(state, "MountPath", sess.MountPath())
	return multistep.ActionContinue
}

func (s *stepChrootCommunicator) Cleanup(multistep.StateBag) {}
