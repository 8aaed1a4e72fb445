package imagefactory

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
)

// stepGrowDisk enlarges the working disk to disk_size and the partition
// that ends last on it (whatever its number); the filesystem follows once
// it is mounted. A layout that cannot grow is refused before the working
// disk is changed.
type stepGrowDisk struct{}

func (s *stepGrowDisk) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	if cfg.DiskSize == "" {
		return multistep.ActionContinue
	}
	disk := state.Get(stateDiskPath).(string)
	size, _ := diskimage.ParseSize(cfg.DiskSize) // validated in Prepare
	// The base's size: a use_backing_file overlay is made at disk_size.
	if state.Get(stateBaseSize).(int64) == size {
		uiOf(state).Say(fmt.Sprintf("disk_size %s is the base image's size already: nothing to grow", cfg.DiskSize))
		return multistep.ActionContinue
	}
	start := time.Now()
	table, err := partition.Read(disk)
	if err != nil {
		return haltf(state, "reading the partition table of the base image: %v", err)
	}
	// Before the disk grows: a refusal leaves it as it was.
	if err := partition.CheckGrow(disk); err != nil {
		return haltf(state, "disk_size %s: base image %s: %v", cfg.DiskSize, cfg.BaseImage, err)
	}
	if err := diskimage.Grow(disk, size); err != nil {
		return haltf(state, "disk_size %s: %v", cfg.DiskSize, err)
	}
	if table.Kind == partition.None {
		// A whole-disk filesystem: nothing to move, the filesystem grows.
		state.Put(stateGrown, &partition.Partition{Number: 0, Start: 0, Size: size})
	} else {
		grown, err := partition.GrowLast(disk)
		if err != nil {
			return haltf(state, "growing the last partition to disk_size %s: %v", cfg.DiskSize, err)
		}
		state.Put(stateGrown, &grown)
		uiOf(state).Say(fmt.Sprintf("Grew partition %d, the one that ends last on the disk", grown.Number))
	}
	uiOf(state).Say(doneLine(fmt.Sprintf("Grew the working disk from %s to %s", diskimage.FormatSize(state.Get(stateBaseSize).(int64)), diskimage.FormatSize(size)), time.Since(start), fileSize(disk)))
	return multistep.ActionContinue
}

func (s *stepGrowDisk) Cleanup(multistep.StateBag) {}
