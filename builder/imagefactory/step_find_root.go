package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepFindRoot picks the partition holding the root filesystem:
// root_partition if given, else by label, else the one with /etc/fstab.
type stepFindRoot struct{}

func (s *stepFindRoot) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	sess := sessionOf(state)
	root, err := sess.FindRoot(ctx)
	if err != nil {
		return haltf(state, "base image %s: %v", configOf(state).BaseImage, err)
	}
	uiOf(state).Say(fmt.Sprintf("Root filesystem: %s", root))
	if sub, why, ok := sess.RootSubvolume(); ok {
		uiOf(state).Say(fmt.Sprintf("Root subvolume: %s, %s", sub, why))
	}
	putGenerated(state, "Device", root.Device)
	putGenerated(state, "RootPartition", root.Number)
	return multistep.ActionContinue
}

func (s *stepFindRoot) Cleanup(multistep.StateBag) {}
