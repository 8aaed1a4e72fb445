package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// Sizes of the boot partitions of a disk made from a tree.
const (
	biosBootSize = 1 << 20  // GRUB's core image (about 100 KiB) with room
	espSize      = 64 << 20 // FAT32 with 512-byte clusters: well over 65525 clusters
	alignment    = 1 << 20
)

// stepMakeDisk makes the raw working disk from the root tree: partition
// table, root filesystem filled from the tree, EFI system partition, GRUB
// for BIOS and UEFI. The disk is then attached and mounted like a base
// image's working disk.
type stepMakeDisk struct {
	handle cleanup.Handle
	taken  bool
}

func (s *stepMakeDisk) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	ui := uiOf(state)
	tree := state.Get(stateRootTree).(string)
	start := time.Now()

	usage, err := rootfs.Measure(tree)
	if err != nil {
		return halt(state, err)
	}
	for _, f := range []string{cfg.Kernel, cfg.Initrd} {
		if fi, err := os.Stat(f); f != "" && err == nil {
			usage.Bytes += fi.Size()
			usage.Inodes++
		}
	}
	free, _ := diskimage.ParseSize(cfg.FreeSpace) // validated in Prepare
	parts, overhead := s.layout(cfg.PartitionTable)
	rootSize := rootfs.Size(usage, cfg.RootFS, free)
	total := overhead + rootSize
	if cfg.DiskSize != "" {
		total, _ = diskimage.ParseSize(cfg.DiskSize)
		need := overhead + rootfs.Size(usage, cfg.RootFS, 0)
		if total < need {
			return haltf(state, "disk_size %s is too small for the root tree: %s of files need a disk of at least %s",
				cfg.DiskSize, diskimage.FormatSize(usage.Bytes), diskimage.FormatSize(need))
		}
	}

	work := filepath.Join(cfg.OutputDirectory, "."+cfg.ImageName+".work.raw")
	h, err := journalOf(state).Take(cleanup.FileEntry(work))
	if err != nil {
		return halt(state, err)
	}
	s.handle, s.taken = h, true
	f, err := os.OpenFile(work, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return haltf(state, "creating the working disk: %v", err)
	}
	err = f.Truncate(total)
	f.Close()
	if err != nil {
		return haltf(state, "creating the working disk: %v", err)
	}
	if err := partition.Create(work, cfg.PartitionTable, parts); err != nil {
		return halt(state, err)
	}
	table, err := partition.Read(work)
	if err != nil {
		return halt(state, err)
	}
	root := table.Partitions[len(table.Partitions)-1]

	spec := rootfs.Spec{Type: cfg.RootFS, Label: rootfs.DefaultLabel(cfg.RootFS), UUID: uuid.NewString(), Usage: usage, Free: free}
	ui.Say(fmt.Sprintf("Making a %s disk of %s (%s): %s root filesystem of %s labelled %s, from %s of files",
		cfg.PartitionTable, diskimage.FormatSize(total), describeLayout(cfg.PartitionTable), cfg.RootFS,
		diskimage.FormatSize(root.Size), spec.Label, diskimage.FormatSize(usage.Bytes)))
	switch cfg.RootFS {
	case rootfs.XFS:
		err = rootfs.MakeXFS(ctx, journalOf(state), work, root.Start, root.Size, tree, state.Get(stateMountPath).(string)+"-fill", spec)
	default:
		err = rootfs.MakeExt4(ctx, work, root.Start, root.Size, tree, spec)
	}
	if errors.Is(err, rootfs.ErrNoSpace) && cfg.DiskSize != "" {
		return haltf(state, "disk_size %s is too small for the root tree: %v", cfg.DiskSize, err)
	}
	if err != nil {
		return halt(state, err)
	}

	boot := bootloader.Root{UUID: spec.UUID, FSType: cfg.RootFS}
	bios := bootloader.BIOS{CoreStart: partition.SectorSize, CoreMax: table.Partitions[0].Start - partition.SectorSize}
	esp := table.Partitions[0]
	if cfg.PartitionTable == partition.GPT {
		bb := table.Partitions[0]
		bios = bootloader.BIOS{CoreStart: bb.Start, CoreMax: bb.Size}
		esp = table.Partitions[1]
	}
	if err := bootloader.InstallBIOS(ctx, work, bios, boot); err != nil {
		return haltf(state, "installing GRUB for BIOS: %v", err)
	}
	if err := bootloader.InstallEFI(ctx, work, bootloader.EFI{Start: esp.Start, Size: esp.Size}, boot); err != nil {
		return haltf(state, "installing GRUB for UEFI: %v", err)
	}
	ui.Say(fmt.Sprintf("Working disk %s made in %s: GRUB for BIOS and UEFI (%s)", work, time.Since(start).Round(time.Millisecond), bootloader.RemovablePath))

	state.Put(stateRootUUID, spec.UUID)
	state.Put(stateDiskPath, work)
	state.Put(stateBaseFormat, "none")
	putGenerated(state, "DiskPath", work)
	return multistep.ActionContinue
}

// layout is the partitions before the root (which takes the rest) and the
// bytes the disk needs besides the root filesystem.
func (s *stepMakeDisk) layout(kind string) ([]partition.Spec, int64) {
	if kind == partition.MBR {
		return []partition.Spec{
			{Size: espSize, Type: "esp"},
			{Size: 0, Type: "linux", Bootable: true},
		}, alignment + espSize
	}
	return []partition.Spec{
		{Size: biosBootSize, Type: "bios-boot", Name: "bios"},
		{Size: espSize, Type: "esp", Name: "esp"},
		{Size: 0, Type: "linux", Name: "root"},
	}, alignment + biosBootSize + espSize + alignment // the backup GPT at the end
}

func describeLayout(kind string) string {
	if kind == partition.MBR {
		return "1: EFI system, 2: root; GRUB's core after the MBR"
	}
	return "1: BIOS boot, 2: EFI system, 3: root"
}

// Cleanup removes the working disk unless the finalize step renamed it.
func (s *stepMakeDisk) Cleanup(state multistep.StateBag) {
	if s.taken {
		if err := journalOf(state).Release(s.handle); err != nil {
			uiOf(state).Error(fmt.Sprintf("removing the working disk: %v", err))
		}
	}
}
