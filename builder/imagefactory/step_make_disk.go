package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// stepMakeDisk makes the raw working disk from the root tree (partition
// table, root filesystem filled from the tree, EFI system partition, GRUB
// for BIOS and UEFI). It is then attached and mounted like a base image's
// working disk.
type stepMakeDisk struct {
	handle cleanup.Handle
	taken  bool
}

func (s *stepMakeDisk) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	ui := uiOf(state)
	start := time.Now()
	o := bootdisk.Options{
		Tree:     state.Get(stateRootTree).(string),
		Table:    cfg.PartitionTable,
		FSType:   cfg.RootFS,
		Journal:  journalOf(state),
		FillPath: state.Get(stateMountPath).(string) + "-fill",
		Disk:     filepath.Join(cfg.OutputDirectory, "."+cfg.ImageName+".work.raw"),
	}
	o.Free, _ = diskimage.ParseSize(cfg.FreeSpace) // validated in Prepare
	if cfg.DiskSize != "" {
		o.Size, _ = diskimage.ParseSize(cfg.DiskSize)
	}
	for _, f := range []string{cfg.Kernel, cfg.Initrd} {
		if fi, err := os.Stat(f); f != "" && err == nil {
			o.Extra += fi.Size()
		}
	}

	h, err := journalOf(state).Take(cleanup.FileEntry(o.Disk))
	if err != nil {
		return halt(state, err)
	}
	s.handle, s.taken = h, true
	ui.Say(fmt.Sprintf("Making a %s disk (%s) with a %s root from %s...", cfg.PartitionTable, bootdisk.Describe(cfg.PartitionTable), cfg.RootFS, o.Tree))
	res, err := bootdisk.Make(ctx, o)
	if errors.Is(err, bootdisk.ErrTooSmall) {
		return haltf(state, "disk_size %s is %v", cfg.DiskSize, err)
	}
	if err != nil {
		return halt(state, err)
	}
	ui.Say(fmt.Sprintf("Working disk %s made in %s: %s, root %s of %s labelled %s (%s of files), GRUB for BIOS and UEFI (%s)",
		o.Disk, time.Since(start).Round(time.Millisecond), diskimage.FormatSize(res.Size), cfg.RootFS,
		diskimage.FormatSize(res.Root.Size), res.Label, diskimage.FormatSize(res.Usage.Bytes), bootloader.RemovablePath))

	state.Put(stateRootUUID, res.RootUUID)
	state.Put(stateDiskPath, o.Disk)
	state.Put(stateBaseFormat, "none")
	putGenerated(state, "DiskPath", o.Disk)
	return multistep.ActionContinue
}

// Cleanup removes the working disk unless the finalize step renamed it.
func (s *stepMakeDisk) Cleanup(state multistep.StateBag) {
	if s.taken {
		if err := journalOf(state).Release(s.handle); err != nil {
			uiOf(state).Error(fmt.Sprintf("removing the working disk: %v", err))
		}
	}
}
