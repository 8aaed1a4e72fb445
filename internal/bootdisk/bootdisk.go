// Package bootdisk makes a bootable raw disk from a root tree: the layout
// (GPT with BIOS boot and EFI system partitions, or MBR), the root
// filesystem filled from the tree (internal/rootfs) and GRUB for BIOS and
// UEFI (internal/bootloader). What ties the tree to the disk (fstab,
// grub.cfg) is written afterwards into the mounted root, so the tree is
// only read.
package bootdisk

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/google/uuid"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// Sizes of the boot partitions.
const (
	BIOSBootSize = 1 << 20  // GRUB's core image (about 100 KiB) with room
	ESPSize      = 64 << 20 // FAT32 with 512-byte clusters: well over 65525 clusters
	alignment    = 1 << 20
)

// Options describe the disk to make.
type Options struct {
	Disk     string // created; must not exist
	Tree     string
	Table    string // partition.GPT or partition.MBR
	FSType   string // rootfs.Ext4 or rootfs.XFS
	Free     int64  // free bytes in the root beyond the tree, when Size is 0
	Size     int64  // the whole disk's size; 0 = just what the tree needs
	Extra    int64  // bytes to reserve for files added later (a kernel)
	Journal  *cleanup.Journal
	FillPath string // a mount point for filling xfs
	// The root filesystem's identity: "" for a fresh UUID and
	// rootfs.DefaultLabel. A filesystem image's root keeps its own, so
	// that what its fstab names is still there.
	UUID, Label string
}

// Result says what was made.
type Result struct {
	Size     int64
	Usage    rootfs.Usage
	Root     partition.Partition
	RootUUID string
	Label    string
}

// ErrTooSmall says Options.Size cannot hold the tree.
var ErrTooSmall = errors.New("too small for the root tree")

// Layout is the partitions before the root (which takes the rest) and the
// bytes the disk needs besides the root filesystem.
func Layout(table string) ([]partition.Spec, int64) {
	if table == partition.MBR {
		return []partition.Spec{
			{Size: ESPSize, Type: "esp"},
			{Size: 0, Type: "linux", Bootable: true},
		}, alignment + ESPSize
	}
	return []partition.Spec{
		{Size: BIOSBootSize, Type: "bios-boot", Name: "bios"},
		{Size: ESPSize, Type: "esp", Name: "esp"},
		{Size: 0, Type: "linux", Name: "root"},
	}, alignment + BIOSBootSize + ESPSize + alignment // the backup GPT at the end
}

// Describe names the layout's partitions.
func Describe(table string) string {
	if table == partition.MBR {
		return "1: EFI system, 2: root; GRUB's core after the MBR"
	}
	return "1: BIOS boot, 2: EFI system, 3: root"
}

// Make creates the disk. On error the caller removes o.Disk.
func Make(ctx context.Context, o Options) (Result, error) {
	usage, err := rootfs.Measure(o.Tree)
	if err != nil {
		return Result{}, err
	}
	usage.Bytes += o.Extra
	parts, overhead := Layout(o.Table)
	total := overhead + rootfs.Size(usage, o.FSType, o.Free)
	if o.Size != 0 {
		need := overhead + rootfs.Size(usage, o.FSType, 0)
		if o.Size < need {
			return Result{}, fmt.Errorf("%w: %d MiB of files need a disk of at least %d MiB", ErrTooSmall, usage.Bytes>>20, need>>20)
		}
		total = o.Size
	}
	f, err := os.OpenFile(o.Disk, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return Result{}, fmt.Errorf("creating the disk: %w", err)
	}
	err = f.Truncate(total)
	f.Close()
	if err != nil {
		return Result{}, fmt.Errorf("creating the disk: %w", err)
	}
	if err := partition.Create(o.Disk, o.Table, parts); err != nil {
		return Result{}, err
	}
	table, err := partition.Read(o.Disk)
	if err != nil {
		return Result{}, err
	}
	root := table.Partitions[len(table.Partitions)-1]

	spec := rootfs.Spec{Type: o.FSType, Label: o.Label, UUID: o.UUID, Usage: usage, Free: o.Free}
	if spec.Label == "" {
		spec.Label = rootfs.DefaultLabel(o.FSType)
	}
	if spec.UUID == "" {
		spec.UUID = uuid.NewString()
	}
	switch o.FSType {
	case rootfs.XFS:
		err = rootfs.MakeXFS(ctx, o.Journal, o.Disk, root.Start, root.Size, o.Tree, o.FillPath, spec)
	default:
		err = rootfs.MakeExt4(ctx, o.Disk, root.Start, root.Size, o.Tree, spec)
	}
	if errors.Is(err, rootfs.ErrNoSpace) && o.Size != 0 {
		return Result{}, fmt.Errorf("%w: %v", ErrTooSmall, err)
	}
	if err != nil {
		return Result{}, err
	}

	boot := bootloader.Root{UUID: spec.UUID, FSType: o.FSType}
	bios := bootloader.BIOS{CoreStart: partition.SectorSize, CoreMax: table.Partitions[0].Start - partition.SectorSize}
	esp := table.Partitions[0]
	if o.Table == partition.GPT {
		bb := table.Partitions[0]
		bios = bootloader.BIOS{CoreStart: bb.Start, CoreMax: bb.Size}
		esp = table.Partitions[1]
	}
	if err := bootloader.InstallBIOS(ctx, o.Disk, bios, boot); err != nil {
		return Result{}, fmt.Errorf("installing GRUB for BIOS: %w", err)
	}
	if err := bootloader.InstallEFI(ctx, o.Disk, bootloader.EFI{Start: esp.Start, Size: esp.Size}, boot); err != nil {
		return Result{}, fmt.Errorf("installing GRUB for UEFI: %w", err)
	}
	return Result{Size: total, Usage: usage, Root: root, RootUUID: spec.UUID, Label: spec.Label}, nil
}
