package imagefactory

import (
	"context"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// stepNormalizeFilesystems, in a reproducible build, makes the filesystems
// the provisioners wrote through the kernel byte-for-byte reproducible,
// once they are unmounted (session.NormalizeWritten: ext4 only; the others
// are named in a warning).
type stepNormalizeFilesystems struct{}

func (s *stepNormalizeFilesystems) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	start := time.Now()
	notes, err := sessionOf(state).NormalizeWritten()
	for _, n := range notes {
		uiOf(state).Error("Warning: " + n)
	}
	if err != nil {
		return halt(state, err)
	}
	if configOf(state).repro.Enabled() {
		uiOf(state).Say("Filesystems normalized for a reproducible build in " + diskimage.FormatDuration(time.Since(start)))
	}
	return multistep.ActionContinue
}

func (s *stepNormalizeFilesystems) Cleanup(multistep.StateBag) {}
