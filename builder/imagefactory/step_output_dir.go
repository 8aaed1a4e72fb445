package imagefactory

import (
	"context"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
)

// stepOutputDir is Packer's StepOutputDir that also records that the
// output directory is this build's, so the reap of an aborted build
// (abort.go) removes it as the step's own cleanup would have, and never a
// directory the build did not make.
type stepOutputDir struct {
	commonsteps.StepOutputDir
}

func (s *stepOutputDir) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	action := s.StepOutputDir.Run(ctx, state)
	if action == multistep.ActionContinue {
		state.Put(stateOutputDirMade, true)
	}
	return action
}
