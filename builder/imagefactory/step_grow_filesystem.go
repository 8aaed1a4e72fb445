package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
)

// stepGrowFilesystem grows the filesystem of the partition disk_size grew,
// before anything of the image is mounted for work; on an LVM PV, the PV
// and the root's LV first.
type stepGrowFilesystem struct{}

func (s *stepGrowFilesystem) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	grown, ok := state.GetOk(stateGrown)
	if !ok {
		return multistep.ActionContinue
	}
	sess := sessionOf(state)
	p := sess.Partition(grown.(*partition.Partition).Number)
	if p == nil {
		return haltf(state, "disk_size: the grown partition %d is not attached", grown.(*partition.Partition).Number)
	}
	if p.PV != nil {
		// An LVM PV: the PV, then the root's LV, then its filesystem.
		msg, err := sess.GrowLVM(ctx, p)
		if err != nil {
			return haltf(state, "disk_size: %v", err)
		}
		uiOf(state).Say(msg)
		return multistep.ActionContinue
	}
	if err := sess.GrowFilesystem(ctx, p); err != nil {
		return haltf(state, "disk_size: growing the filesystem of partition %d: %v", p.Number, err)
	}
	uiOf(state).Say(fmt.Sprintf("Grew the %s filesystem of partition %d to fill it", p.FS.Type, p.Number))
	return multistep.ActionContinue
}

func (s *stepGrowFilesystem) Cleanup(multistep.StateBag) {}
