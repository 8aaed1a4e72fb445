// Package bootdisk makes a bootable raw disk from a root tree: the layout
// (GPT with BIOS boot and EFI system partitions, or MBR; an arm64 tree
// gets GPT with an EFI system partition only), the root filesystem filled
// from the tree (internal/rootfs) and GRUB for BIOS and UEFI, or UEFI only
// on arm64 (internal/bootloader). What ties the tree to the disk (fstab,
// grub.cfg) is written afterwards into the mounted root, so the tree is
// only read.
package bootdisk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/uuid"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
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
	Disk  string // created; must not exist
	Tree  string
	Table string // partition.GPT or partition.MBR
	// Arch is the tree's architecture, Debian's name: "" or "amd64" for
	// GRUB for BIOS and UEFI from the host's GRUB packages, "arm64" for
	// GRUB arm64-efi only, from the tree's own grub-efi-arm64-bin
	// (Debian does not let an amd64 host install it).
	Arch     string
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
	// Repro, when not nil, derives every identifier and time the disk
	// gets from the build's Source (IDs below); nil keeps them random and
	// the clock's.
	Repro *repro.Source
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

// Arm64 is Debian's name of the 64-bit ARM architecture.
const Arm64 = "arm64"

// ErrArch says a disk for that architecture, or with that partition
// table for it, cannot be made.
var ErrArch = errors.New("no bootable disk")

// Check says whether a disk with table can be made for a tree of arch
// (Debian's name): amd64 (or "", or i386) with either table; arm64 with
// GPT only, since it boots through UEFI only and an MBR layout's point
// here is GRUB's BIOS core after the MBR. Errors wrap ErrArch.
func Check(table, arch string) error {
	switch arch {
	case "", "amd64", "i386":
		return nil
	case Arm64:
		if table != partition.GPT {
			return fmt.Errorf("%w with partition_table %q for arm64: an arm64 disk boots through UEFI only and is made with a GPT (an EFI system partition and the root); use partition_table = \"gpt\" (the default)", ErrArch, table)
		}
		return nil
	}
	return fmt.Errorf("%w for a tree of architecture %s: GRUB is installed for amd64 and arm64 only", ErrArch, arch)
}

// Layout is the partitions before the root (which takes the rest) and the
// bytes the disk needs besides the root filesystem, for a tree of arch
// (Debian's name; "" for amd64).
func Layout(table, arch string) ([]partition.Spec, int64) {
	if arch == Arm64 {
		return []partition.Spec{
			{Size: ESPSize, Type: "esp", Name: "esp"},
			{Size: 0, Type: "linux", Name: "root"},
		}, alignment + ESPSize + alignment
	}
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
func Describe(table, arch string) string {
	if arch == Arm64 {
		return "1: EFI system, 2: root; GRUB arm64-efi"
	}
	if table == partition.MBR {
		return "1: EFI system, 2: root; GRUB's core after the MBR"
	}
	return "1: BIOS boot, 2: EFI system, 3: root"
}

// Make creates the disk. On error the caller removes o.Disk.
func Make(ctx context.Context, o Options) (Result, error) {
	if err := Check(o.Table, o.Arch); err != nil {
		return Result{}, err
	}
	usage, err := rootfs.Measure(o.Tree)
	if err != nil {
		return Result{}, err
	}
	usage.Bytes += o.Extra
	parts, overhead := Layout(o.Table, o.Arch)
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
	if err := partition.Create(o.Disk, o.Table, parts, tableIDs(o.Repro, o.Table, parts)...); err != nil {
		return Result{}, err
	}
	table, err := partition.Read(o.Disk)
	if err != nil {
		return Result{}, err
	}
	root := table.Partitions[len(table.Partitions)-1]

	spec := rootfs.Spec{Type: o.FSType, Label: o.Label, UUID: o.UUID, Usage: usage, Free: o.Free, Repro: o.Repro}
	if spec.Label == "" {
		spec.Label = rootfs.DefaultLabel(o.FSType)
	}
	if spec.UUID == "" && o.Repro.Enabled() {
		spec.UUID = o.Repro.UUID(o.FSType + "/root/uuid").String()
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
	if o.Arch == Arm64 {
		esp := table.Partitions[0]
		if err := installArm64(ctx, o, bootloader.EFI{Start: esp.Start, Size: esp.Size, Repro: o.Repro}, boot); err != nil {
			return Result{}, fmt.Errorf("installing GRUB arm64-efi: %w", err)
		}
		return Result{Size: total, Usage: usage, Root: root, RootUUID: spec.UUID, Label: spec.Label}, nil
	}
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
	if err := bootloader.InstallEFI(ctx, o.Disk, bootloader.EFI{Start: esp.Start, Size: esp.Size, Repro: o.Repro}, boot); err != nil {
		return Result{}, fmt.Errorf("installing GRUB for UEFI: %w", err)
	}
	return Result{Size: total, Usage: usage, Root: root, RootUUID: spec.UUID, Label: spec.Label}, nil
}

// tableIDs derives the partition table's identifiers from src, filling
// the GPT partitions' GUIDs into parts: the disk GUID ("gpt/disk-guid"),
// partition N's unique GUID ("gpt/part/N"), or the MBR disk signature
// ("mbr/disk-id", which the MBR PARTUUIDs derive from). The headers' and
// the entries' CRCs then follow. A nil src gives no option: go-diskfs and
// partition.Create pick them at random.
func tableIDs(src *repro.Source, table string, parts []partition.Spec) []partition.Option {
	if !src.Enabled() {
		return nil
	}
	if table == partition.MBR {
		return []partition.Option{partition.WithDiskID(fmt.Sprintf("%08x", src.Uint32("mbr/disk-id")))}
	}
	for i := range parts {
		parts[i].UUID = src.UUID(fmt.Sprintf("gpt/part/%d", i+1)).String()
	}
	return []partition.Option{partition.WithDiskID(src.UUID("gpt/disk-guid").String())}
}

// installArm64 puts GRUB arm64-efi on the ESP, made by the host's
// grub-mkimage from the tree's own modules (grub-efi-arm64-bin in the
// tree): grub-mkimage only assembles files, so nothing of the tree runs
// (measured: 0.01 s, against seconds for grub-mkimage under qemu-user in
// the chroot, which would also need binfmt_misc here). The modules are
// copied out of the tree first, confined to it: a symlink in the tree
// never brings a host file into the boot loader.
func installArm64(ctx context.Context, o Options, e bootloader.EFI, r bootloader.Root) error {
	e.Platform = bootloader.EFIArm64
	tree, err := inroot.Open(o.Tree)
	if err != nil {
		return err
	}
	defer tree.Close()
	if fi, err := tree.Stat(e.Platform.Dir + "/moddep.lst"); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("the arm64 tree has no GRUB arm64-efi modules (%s): install %s in it (bootstrap include)", e.Platform.Dir, e.Platform.Package)
	}
	tmp, err := os.MkdirTemp("", "imagefactory-grub-arm64-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	e.Dir = filepath.Join(tmp, "arm64-efi")
	if err := tree.CopyOut(e.Platform.Dir, e.Dir); err != nil {
		return fmt.Errorf("copying the tree's GRUB modules: %w", err)
	}
	return bootloader.InstallEFI(ctx, o.Disk, e, r)
}
