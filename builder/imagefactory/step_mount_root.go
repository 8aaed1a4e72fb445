package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepMountRoot mounts the root filesystem at the mount path. Its release
// unmounts everything mounted beneath it too, newest first.
type stepMountRoot struct {
	mounted bool
}

func (s *stepMountRoot) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	sess := sessionOf(state)
	s.mounted = true // a failed mount leaves nothing, and Unmount knows it
	if err := sess.MountRoot(); err != nil {
		return halt(state, err)
	}
	uiOf(state).Say(fmt.Sprintf("Mounted the root filesystem at %s", sess.MountPath()))
	return multistep.ActionContinue
}

func (s *stepMountRoot) release(state multistep.StateBag) error {
	if !s.mounted {
		return nil
	}
	s.mounted = false
	return sessionOf(state).Unmount()
}

func (s *stepMountRoot) Cleanup(state multistep.StateBag) {
	if err := s.release(state); err != nil {
		uiOf(state).Error(fmt.Sprintf("unmounting: %v", err))
	}
}
