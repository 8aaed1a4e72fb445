package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fsimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
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
		Repro:    cfg.repro,
		Tree:     state.Get(stateRootTree).(string),
		Table:    cfg.PartitionTable,
		Arch:     treeArch(state),
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
	if mods, ok := state.GetOk(stateKernelModules); ok && mods.(kernelModules).HostDir != "" {
		u, err := rootfs.Measure(mods.(kernelModules).HostDir)
		if err != nil {
			return halt(state, err)
		}
		o.Extra += u.Bytes
	}
	if src, ok := state.GetOk(stateSourceFS); ok {
		keepIdentity(ui, &o, src.(fsimage.Info))
	}

	h, err := journalOf(state).Take(cleanup.FileEntry(o.Disk))
	if err != nil {
		return halt(state, err)
	}
	s.handle, s.taken = h, true
	ui.Say(fmt.Sprintf("Making a %s disk (%s) with a %s root from %s...", cfg.PartitionTable, bootdisk.Describe(cfg.PartitionTable, treeArch(state)), cfg.RootFS, o.Tree))
	res, err := bootdisk.Make(ctx, o)
	if m, ok := state.GetOk(stateSourceMount); ok {
		// The filesystem image is copied: let it go now, not after the build.
		if cerr := m.(*fsimage.Mounted).Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("releasing source_rootfs %s: %w", cfg.SourceRootfs, cerr))
		}
	}
	if errors.Is(err, bootdisk.ErrTooSmall) {
		return haltf(state, "disk_size %s is %v", cfg.DiskSize, err)
	}
	if err != nil {
		return halt(state, err)
	}
	grub := "GRUB for BIOS and UEFI (" + bootloader.RemovablePath + ")"
	if o.Arch == bootdisk.Arm64 {
		grub = "GRUB arm64-efi from the tree's modules (" + bootloader.EFIArm64.Loader + ")"
	}
	ui.Say(doneLine("Working disk made", time.Since(start), fmt.Sprintf("%s, root %s of %s labelled %s (%s of files), %s",
		fileSize(o.Disk), cfg.RootFS, diskimage.FormatSize(res.Root.Size), res.Label, diskimage.FormatSize(res.Usage.Bytes), grub)))

	state.Put(stateRootUUID, res.RootUUID)
	state.Put(stateRootLabel, res.Label)
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

// keepIdentity gives the new root the filesystem image's UUID and label,
// what its fstab, its boot loader configuration and its users name it by
// (stepRootTree checked that the label fits). An image without a label
// gets the default one.
func keepIdentity(ui packersdk.Ui, o *bootdisk.Options, src fsimage.Info) {
	o.UUID, o.Label = src.UUID, src.Label
	kept := fmt.Sprintf("the image's UUID %s and label %q", src.UUID, src.Label)
	if src.Label == "" {
		kept = fmt.Sprintf("the image's UUID %s and the label %s (the image had none)", src.UUID, rootfs.DefaultLabel(o.FSType))
	}
	ui.Say(fmt.Sprintf("The new %s root filesystem keeps %s", o.FSType, kept))
}
