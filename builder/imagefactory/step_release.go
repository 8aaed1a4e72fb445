package imagefactory

import (
	"context"
	"errors"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepRelease gives back, newest first, everything the earlier steps hold
// on the working disk, once provisioning is over: swapped files restored,
// chroot processes stopped, filesystems unmounted, loop devices detached.
// Only then is the disk whole and safe to convert and name.
type stepRelease struct {
	steps []releaser
}

func (s *stepRelease) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		errs = append(errs, s.steps[i].release(state))
	}
	if err := errors.Join(errs...); err != nil {
		return haltf(state, "releasing the working disk: %v", err)
	}
	uiOf(state).Say("Unmounted the image and detached its loop devices")
	return multistep.ActionContinue
}

func (s *stepRelease) Cleanup(multistep.StateBag) {}
