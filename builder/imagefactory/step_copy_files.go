package imagefactory

import (
	"context"
	"fmt"
	"path"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepCopyFiles copies copy_files from the host into the image at the same
// paths (parents created as needed), resolved inside the image root.
type stepCopyFiles struct{}

func (s *stepCopyFiles) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	root := sessionOf(state).RootFS()
	for _, f := range configOf(state).CopyFiles {
		if err := root.MkdirAll(path.Dir(f), 0o755); err != nil {
			return haltf(state, "copy_files: %s: %v", f, err)
		}
		if err := root.CopyIn(f, f); err != nil {
			return haltf(state, "copy_files: %s: %v", f, err)
		}
		uiOf(state).Say(fmt.Sprintf("Copied %s into the image", f))
	}
	return multistep.ActionContinue
}

func (s *stepCopyFiles) Cleanup(multistep.StateBag) {}
