package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
)

// stepSBOMBase reads, offline, the packages of the image as the build
// found it (the base image, or the root tree the disk was made from), once
// its filesystems are mounted and before anything is provisioned: the
// SBOM's package changes are measured against it.
type stepSBOMBase struct{}

func (s *stepSBOMBase) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	if !configOf(state).SBOM {
		return multistep.ActionContinue
	}
	inv, err := sbom.Read(sessionOf(state).MountPath())
	if err != nil {
		uiOf(state).Error(fmt.Sprintf("Warning: reading the packages of %s: %v; the SBOM will show no package changes", configOf(state).inputName(), err))
		return multistep.ActionContinue
	}
	state.Put(stateSBOMBase, inv)
	return multistep.ActionContinue
}

func (s *stepSBOMBase) Cleanup(multistep.StateBag) {}
