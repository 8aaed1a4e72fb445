package imagefactory

import (
	"context"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/chrootprep"
)

// stepBlockServices keeps packages installed in the chroot from starting
// their services on the build host (policy-rc.d on Debian-family images),
// unless allow_service_starts is set; the image's own policy comes back.
type stepBlockServices struct {
	restore chrootprep.Restore
}

func (s *stepBlockServices) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	if configOf(state).AllowServiceStarts {
		return multistep.ActionContinue
	}
	r, ok, err := chrootprep.BlockServices(sessionOf(state).RootFS())
	if err != nil {
		return halt(state, err)
	}
	if ok {
		uiOf(state).Say("Service starts are blocked in the chroot (policy-rc.d)")
	}
	s.restore = r
	return multistep.ActionContinue
}

func (s *stepBlockServices) release(state multistep.StateBag) error {
	if s.restore == nil {
		return nil
	}
	err := s.restore()
	s.restore = nil
	return err
}

func (s *stepBlockServices) Cleanup(state multistep.StateBag) {
	if err := s.release(state); err != nil {
		uiOf(state).Error(err.Error())
	}
}
