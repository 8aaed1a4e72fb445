package imagefactory

import (
	"context"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/chrootprep"
)

// stepBlockServices keeps packages installed in the chroot from starting
// their services on the build host (policy-rc.d on Debian-family images,
// service(8) wrapped, systemctl offline, OpenRC unbooted: see
// chrootprep.BlockServices), unless allow_service_starts is set; the
// image's own files come back.
type stepBlockServices struct {
	restore chrootprep.Restore
}

func (s *stepBlockServices) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	if configOf(state).AllowServiceStarts {
		return multistep.ActionContinue
	}
	r, did, err := chrootprep.BlockServices(sessionOf(state).RootFS())
	if err != nil {
		return halt(state, err)
	}
	if len(did) > 0 {
		uiOf(state).Say("Service starts are blocked in the chroot: " + strings.Join(did, "; "))
	} else {
		uiOf(state).Say("Service starts: the image has no policy-rc.d family, service(8), systemd or OpenRC to block")
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
