package imagefactory

import (
	"path/filepath"
	"slices"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootstrap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// defaultFreeSpace is the room left in a root filesystem made from a tree.
const defaultFreeSpace = "256M"

// fromTree says the disk is made from a root tree, not a base image.
func (c *Config) fromTree() bool { return c.SourceRootfs != "" || c.Bootstrap != nil }

// inputName names the build's input for messages: the base image, the
// source_rootfs, or the bootstrap.
func (c *Config) inputName() string {
	switch {
	case c.SourceRootfs != "":
		return "source_rootfs " + c.SourceRootfs
	case c.Bootstrap != nil:
		return "the bootstrapped tree"
	}
	return "base image " + c.BaseImage
}

// prepareRootfs validates and defaults the options of a disk made from a
// root tree.
func (c *Config) prepareRootfs(add func(string, ...interface{})) {
	if !c.fromTree() {
		for name, set := range map[string]bool{
			"partition_table": c.PartitionTable != "", "root_fs": c.RootFS != "", "free_space": c.FreeSpace != "",
			"kernel": c.Kernel != "", "initrd": c.Initrd != "", "kernel_modules": c.KernelModules != "", "kernel_cmdline": c.KernelCmdline != "", "fstab_by": c.FstabBy != "",
		} {
			if set {
				add("%s applies only to a disk made from a root tree (source_rootfs or bootstrap)", name)
			}
		}
		return
	}
	switch c.PartitionTable {
	case "":
		c.PartitionTable = partition.GPT
	case partition.GPT, partition.MBR:
	default:
		add("partition_table %q is not supported; use gpt or mbr", c.PartitionTable)
	}
	c.rootFSGiven = c.RootFS != ""
	switch c.RootFS {
	case "":
		c.RootFS = rootfs.Ext4
	case rootfs.Ext4, rootfs.XFS:
	default:
		add("root_fs %q is not supported; use ext4 or xfs", c.RootFS)
	}
	if c.FreeSpace == "" {
		c.FreeSpace = defaultFreeSpace
	}
	if _, err := diskimage.ParseSize(c.FreeSpace); err != nil {
		add("free_space: %v", err)
	}
	if c.DiskSize != "" {
		if _, err := diskimage.ParseSize(c.DiskSize); err != nil {
			add("disk_size: %v", err)
		}
	}
	if c.Initrd != "" && c.Kernel == "" {
		add("initrd needs kernel: the tree's own kernel comes with its own initrd")
	}
	if c.KernelModules != "" && c.Kernel == "" {
		add("kernel_modules needs kernel: the tree's own kernel comes with its own modules")
	}
	for _, p := range []*string{&c.Kernel, &c.Initrd, &c.KernelModules} {
		if *p != "" && !filepath.IsAbs(*p) {
			if abs, err := filepath.Abs(*p); err == nil {
				*p = abs
			}
		}
	}
	c.cmdlineGiven = c.KernelCmdline != ""
	if c.KernelCmdline == "" {
		c.KernelCmdline = bootloader.DefaultCmdline
		if c.Bootstrap != nil && c.Bootstrap.Arch == string(arch.ARM64) {
			c.KernelCmdline = bootloader.DefaultCmdlineArm64
		}
	}
	switch c.FstabBy {
	case "":
		c.FstabBy = "label"
	case "label", "uuid":
	default:
		add("fstab_by %q is not supported; use label or uuid", c.FstabBy)
	}
	if b := c.Bootstrap; b != nil {
		if b.Tool != bootstrap.Debootstrap {
			add("bootstrap.tool %q is not supported; use %q", b.Tool, bootstrap.Debootstrap)
		}
		if b.Suite == "" {
			add("bootstrap.suite is required (e.g. bookworm)")
		}
		if b.CacheDir == "" {
			b.CacheDir = bootstrap.DefaultCacheDir()
		}
		if b.Arch != "" {
			if a := arch.Arch(b.Arch); !a.Valid() {
				add("bootstrap.arch %q is not an architecture Debian names; use one of %s", b.Arch, arch.Known)
			} else if err := bootdisk.Check(c.PartitionTable, b.Arch); err != nil {
				add("bootstrap.arch %q: %v", b.Arch, err)
			} else if a == arch.ARM64 && !slices.Contains(b.Include, bootloader.EFIArm64.Package) {
				// The disk is made before any provisioner runs, and the tree
				// is cached by its package list: caught here, not after the
				// second stage.
				add("bootstrap.arch %q: include needs %q: the disk's GRUB arm64-efi is made from the tree's own modules, before any provisioner runs", b.Arch, bootloader.EFIArm64.Package)
			}
		}
		// Caught here, not after a second stage that can take half an hour.
		if want := b.Arch; c.Architecture != "" && want != "" && c.Architecture != want {
			add("architecture = %q contradicts bootstrap.arch = %q: the bootstrapped tree is %s; set one of them, or both the same", c.Architecture, want, want)
		} else if want == "" && c.Architecture != "" && arch.Arch(c.Architecture) != arch.Host() {
			add("architecture = %q, but bootstrap makes a tree of this host's architecture (%s): set bootstrap.arch = %q", c.Architecture, arch.Host(), c.Architecture)
		}
	}
	if c.SourceRootfs != "" {
		if abs, err := filepath.Abs(c.SourceRootfs); err == nil {
			c.SourceRootfs = abs
		}
	}
}
