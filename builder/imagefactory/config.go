//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config,QemuConfig,BootstrapConfig
//go:generate ../../scripts/struct-markdown.sh

package imagefactory

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/selinux"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/session"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// Config is the configuration of the imagefactory builder.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// The disk image to start from: a local path or a URL (http, https,
	// file). Raw, qcow2, vmdk, vhdx and vpc are detected by their content,
	// not by the file name; gzip, xz and zstd compressed images are
	// decompressed on the way in. The base image itself is never modified.
	// The artifact of an earlier imagefactory build (raw or qcow2) is a
	// base image like any other. Exactly one of `base_image`,
	// `source_rootfs` and `bootstrap` is required.
	BaseImage string `mapstructure:"base_image" required:"true"`
	// With a local `base_image`: the artifact is a qcow2 overlay whose
	// backing file is the base image (by its absolute path), holding only
	// the clusters the build changed. The build works on that overlay,
	// shown to the loop devices as a raw file over FUSE by
	// qemu-storage-daemon (there is no NBD here): nothing of the base is
	// copied. Without FUSE it works on a raw copy and computes the overlay
	// at the end (`qemu-img rebase`). `format` must be `qcow2` (the default
	// then). The base must stay where it is.
	UseBackingFile bool `mapstructure:"use_backing_file"`
	// Make a bootable disk from a root tree instead of starting from a
	// disk image: a directory, a tarball (`.tar`, `.tar.gz`, `.tar.xz`,
	// `.tar.zst`; the compression is recognised by content), or a
	// filesystem image: a file holding one bare ext2, ext3, ext4 or xfs
	// filesystem with no partition table, such as an AMI's image file
	// (recognised by its superblock, not its name), also inside a qcow2 or
	// compressed (gzip, xz, zstd; then read from a sparse raw working copy
	// in the output directory). The source is only
	// read: a filesystem image is attached to a read-only loop device and
	// mounted read-only without replaying its journal (`ro,noload`,
	// `ro,norecovery`), and its files are copied into the new root
	// filesystem, which keeps the image's UUID and label, so that its
	// `/etc/fstab` still names it. The tree needs `/boot/vmlinuz-*` (and
	// usually `/boot/initrd.img-*`) unless `kernel` is given.
	SourceRootfs string `mapstructure:"source_rootfs"`
	// Make the root tree with a bootstrap tool, then a bootable disk from
	// it as with `source_rootfs`. See the `bootstrap` block below.
	Bootstrap *BootstrapConfig `mapstructure:"bootstrap"`
	// For `source_rootfs` and `bootstrap`: `gpt` (default: a BIOS boot
	// partition, an EFI system partition and the root, in that order) or
	// `mbr` (an EFI system partition and the root; GRUB's core image in the
	// gap after the MBR). Both boot with BIOS and UEFI firmware. An arm64
	// tree gets `gpt` only: an EFI system partition and the root.
	PartitionTable string `mapstructure:"partition_table"`
	// For `source_rootfs` and `bootstrap`: the root filesystem, `ext4`
	// (default, labelled `cloudimg-rootfs`) or `xfs` (labelled
	// `img-rootfs`: xfs labels hold 12 characters). From a filesystem
	// image the default is its own kind (`xfs` for xfs, `ext4` for
	// ext2/3/4) and the label is the image's.
	RootFS string `mapstructure:"root_fs"`
	// For `source_rootfs` and `bootstrap`: free space in the root
	// filesystem beyond what the tree needs, when `disk_size` is not set
	// (`1G`, `512M`...). Default `256M`.
	FreeSpace string `mapstructure:"free_space"`
	// For `source_rootfs` and `bootstrap`: a kernel image on the host to
	// boot instead of the tree's newest `/boot/vmlinuz-*`; copied to
	// `/boot` in the image. What a tree without a kernel (an AMI's root
	// filesystem from the Xen era) needs. Its modules come from
	// `kernel_modules` when the tree has none for its release.
	Kernel string `mapstructure:"kernel"`
	// For `source_rootfs` and `bootstrap`: the initrd for `kernel`; copied
	// to `/boot` in the image. It must hold what mounts the root (Debian's
	// initramfs-tools with `MODULES=most`, its default, does).
	Initrd string `mapstructure:"initrd"`
	// With `kernel`: the directory of its modules on the host, copied to
	// `/lib/modules/RELEASE` in the image when the tree has no such
	// directory (RELEASE is read from the kernel image's header, as
	// `uname -r` gives it). Default `/lib/modules/RELEASE` of the host;
	// if that does not exist either, the build warns and the image boots
	// with what the initrd holds only.
	KernelModules string `mapstructure:"kernel_modules"`
	// For `source_rootfs` and `bootstrap`: kernel arguments after
	// `root=UUID=... ro`. Default `console=tty0 console=ttyS0,115200`
	// (the login prompt on the first serial port too); for an arm64 tree
	// `console=tty0 console=ttyAMA0,115200` (the PL011 of QEMU's `virt`
	// machine; AWS Graviton wants `ttyS0`).
	KernelCmdline string `mapstructure:"kernel_cmdline"`
	// For `source_rootfs` and `bootstrap`: how `/etc/fstab` (written by the
	// builder, replacing the tree's) names the root: `label` (default) or
	// `uuid`. From a filesystem image the image's `/etc/fstab` is kept:
	// only a `/` line that names another device (`/dev/xvda1`) is changed,
	// to name the root this way, and the build says so.
	FstabBy string `mapstructure:"fstab_by"`
	// The checksum of `base_image` in Packer's usual forms: `sha256:...`
	// (also md5, sha1, sha512), `file:URL-or-path` of a checksum file, or
	// `none`. Required when `base_image` is a URL.
	BaseImageChecksum string `mapstructure:"base_image_checksum"`
	// How provisioners reach the image. `chroot` (the default) mounts the
	// image's filesystems through loop devices and runs every provisioner
	// in a chroot. `qemu` boots the image under QEMU and provisions it over
	// SSH (see the qemu strategy's options).
	Strategy string `mapstructure:"strategy"`
	// Where the result goes; created by the build, and refused if it
	// exists unless `packer build -force` is used. Defaults to
	// `output-<build name>`. A build running at the same time holds its
	// own: `-force` does not delete it, and a second build is refused.
	OutputDirectory string `mapstructure:"output_directory"`
	// The name of the image file in `output_directory`, without extension.
	// Defaults to the build name.
	ImageName string `mapstructure:"image_name"`
	// The format of the artifact: `raw` (default) or `qcow2`. The working
	// disk is always raw; a qcow2 artifact is converted at the end.
	Format string `mapstructure:"format"`
	// With `format = "qcow2"`: the qcow2 version, `1.1` (default: qcow2
	// version 3, QEMU 1.1 and later) or `0.10` (version 2, for consumers
	// with an older QEMU; it cannot hold zstd compressed clusters).
	QCOW2Compat string `mapstructure:"qcow2_compat"`
	// Grow the working disk to this size (`8G`, `8GiB`, `10240M`, or
	// bytes). The partition that ends last on the disk, whatever its number
	// (Ubuntu's root is partition 1, after 14, 15 and 16), grows with it
	// (MBR or GPT, the GPT backup header moved), and so does its filesystem
	// (ext4, xfs or btrfs). The base image's own size changes nothing. A
	// size smaller than the base image is an error, and so is a swap,
	// extended or logical partition lying last (refused before anything is
	// written, naming it and what to do). With `source_rootfs` or
	// `bootstrap`: the size of the disk made (default: just large enough
	// for the tree plus `free_space`); too small for the tree is an error.
	// When the last partition is an LVM PV, the PV grows, then the LV
	// holding `/` over the free extents that follow it (refused when
	// another LV follows it), then that LV's filesystem.
	DiskSize string `mapstructure:"disk_size"`
	// The number (1-based, as Linux numbers them) of the partition holding
	// the root filesystem. By default the root is found by label
	// (`cloudimg-rootfs`, `img-rootfs`), else by looking for `/etc/fstab`.
	// On btrfs the root's subvolume is found either way: the one the
	// image's fstab mounts on `/`, else the default subvolume, else the one
	// holding `/etc/fstab`.
	RootPartition int `mapstructure:"root_partition"`
	// Mount points from the image's `/etc/fstab` that must be mounted.
	// Others that cannot be mounted here (vfat, for one, on kernels
	// without it, unless staged: see `fat_mounts`) are reported and
	// skipped; an empty read-only placeholder
	// stands at such a mount point, so writes below it fail instead of
	// landing in the filesystem beneath, and a mount point directory the
	// build had to create for it is removed afterwards.
	RequiredMounts []string `mapstructure:"required_mounts"`
	// What becomes of a FAT filesystem of the image's `/etc/fstab` (an ESP
	// on `/boot/efi`, a Raspberry Pi firmware partition on
	// `/boot/firmware`) when the kernel cannot mount vfat, in the chroot
	// strategy. `staged` (default): its files are copied with mtools into a
	// tmpfs mounted there, provisioners read and write them, and what
	// changed is written back to the partition once they are done
	// (`fsck.fat -n` must then find it as clean as before); a failed,
	// cancelled or killed build leaves the partition untouched. What FAT
	// cannot hold (symbolic links, device nodes, names differing only in
	// case, names with `"*/:<>?\|` or beyond ASCII) fails the build at write-back, naming
	// the path. `placeholder`: skipped, with the read-only placeholder
	// described under `required_mounts`.
	FATMounts string `mapstructure:"fat_mounts"`
	// Options for mounting the root filesystem, such as `noatime`. On
	// btrfs, `subvolid=N` or `subvol=PATH` here chooses the root's
	// subvolume instead of the one found.
	MountOptions []string `mapstructure:"mount_options"`
	// Where the root filesystem is mounted on the host. May use
	// `{{.BuildName}}`. Defaults to
	// `/run/imagefactory/mnt/{{.BuildName}}-<random>`. Builds running at
	// the same time need different paths: one that another build holds,
	// or that has a filesystem mounted on it, is refused.
	MountPath string `mapstructure:"mount_path"`
	// Extra or replacement mounts for the chroot, each
	// `[fstype, source, target]` as in amazon-chroot. The defaults are
	// proc on `/proc`, sysfs on `/sys`, a private `/dev` (a tmpfs holding
	// only `null`, `zero`, `full`, `random`, `urandom`, `tty`, the links
	// `ptmx`, `fd`, `stdin`, `stdout`, `stderr`, and this build's own loop
	// devices), a fresh devpts instance on `/dev/pts`, a tmpfs on
	// `/dev/shm` and a tmpfs on `/run`. An entry with the target of a
	// default replaces it; an fstype of `none` removes it.
	// `["bind", "/dev", "/dev"]` brings the host's `/dev` back, and with it
	// every host disk, the host's loop devices, and writes that land in
	// the host's devtmpfs and outlive the build.
	ChrootMounts [][]string `mapstructure:"chroot_mounts"`
	// How the image gets name resolution during the build: `copy`
	// (default: the host's `/etc/resolv.conf` is copied in and the
	// image's own file or symlink is put back exactly afterwards), `bind`
	// (the host's file is bind-mounted over it) or `keep` (untouched).
	ResolvConf string `mapstructure:"resolv_conf"`
	// Let packages start services during provisioning. By default a
	// `policy-rc.d` that refuses every start is put in place on
	// Debian-family images, the image's `service` command is wrapped so
	// that it starts and stops nothing (it runs `/etc/init.d` scripts
	// directly in a chroot), and an OpenRC image's chroot must have no
	// `/run/openrc/softlevel`; the image's own files come back afterwards.
	// `systemctl` always runs offline in the chroot (`SYSTEMD_OFFLINE=1`).
	AllowServiceStarts bool `mapstructure:"allow_service_starts"`
	// Host files copied into the image at the same path before
	// provisioning, as in amazon-chroot.
	CopyFiles []string `mapstructure:"copy_files"`
	// SELinux labels for what the build wrote: a file
	// written in a chroot on a host without SELinux has none, and an
	// enforcing image then refuses logins or denies services. `auto`
	// (default): when the image's `/etc/selinux/config` says `enforcing`
	// or `permissive`, relabel the paths that `copy_files` and the
	// provisioners changed (found by their change time; a new directory
	// with its subtree) with the image's policy
	// (`/etc/selinux/SELINUXTYPE/contexts/files/file_contexts`) and the
	// image's `setfiles` run in the chroot, or the host's `setfiles -r`
	// when the image has none; nothing when it says `disabled` or has no
	// such file. `full`: relabel every filesystem of the image. `firstboot`:
	// create `/.autorelabel`, so the image relabels itself at its first
	// boot. `off`: nothing. An enforcing image without the policy its
	// config names is an error (permissive with `auto`: a warning). With
	// strategy `qemu` the guest labels what its provisioners write; the
	// files the builder edits offline after the boot are relabelled with
	// the host's `setfiles -r`.
	SELinuxRelabel string `mapstructure:"selinux_relabel"`
	// The CPU architecture the image must be, in Debian's names: `amd64`,
	// `arm64`, `armhf`, `armel`, `i386`, `riscv64`, `ppc64el`, `s390x`.
	// The builder reads the image's architecture from its own `/bin/sh`
	// and dynamic loader (ELF headers), prints it and exposes it as
	// generated data `Architecture`; set this to pin it, and a base image
	// of another architecture is an error. Empty (default): any. With the
	// chroot strategy, binaries of another architecture than the host's run
	// under qemu-user through binfmt_misc: the host's registration when it
	// has the F flag, otherwise Debian's `qemu-user-static` interpreter,
	// registered for the build and removed after it.
	Architecture string `mapstructure:"architecture"`
	// Host commands run before the image's filesystems are mounted.
	// `{{.Device}}` is the root's loop device, `{{.MountPath}}` the mount
	// path, `{{.DiskPath}}` the working disk.
	PreMountCommands []string `mapstructure:"pre_mount_commands"`
	// Host commands run after everything is mounted, before provisioning.
	// Same variables as `pre_mount_commands`.
	PostMountCommands []string `mapstructure:"post_mount_commands"`
	// Host commands run after provisioning, before anything is unmounted.
	// Same variables as `pre_mount_commands`.
	PreUnmountCommands []string `mapstructure:"pre_unmount_commands"`
	// A template wrapping every command the builder runs on the host,
	// including the chroot commands of provisioners: `{{.Command}}` is the
	// command. For example `sudo {{.Command}}`. Defaults to
	// `{{.Command}}`.
	CommandWrapper string `mapstructure:"command_wrapper"`
	// Environment variables for every command run in the chroot. The
	// chroot does not inherit the host's environment: only `PATH`,
	// `HOME=/root`, `LANG=C.UTF-8`, `DEBIAN_FRONTEND=noninteractive` and
	// these.
	Environment map[string]string `mapstructure:"environment"`
	// Makes the build reproducible: seconds since 1970-01-01 UTC, as digits
	// (the [SOURCE_DATE_EPOCH](https://reproducible-builds.org/specs/source-date-epoch/)
	// convention). Every identifier and timestamp the plugin makes (partition
	// GUIDs, filesystem UUIDs and hash seeds, FAT volume IDs, file times)
	// is derived from it and the build's name. Defaults to the environment's
	// `SOURCE_DATE_EPOCH`; unset in both, builds are not reproducible. An
	// xfs root from a tree is refused with it. What is derived from what,
	// and what breaks reproducibility: docs/reproducible.md.
	SourceDateEpoch string `mapstructure:"source_date_epoch"`
	// The epoch in effect (from source_date_epoch or the environment); nil
	// when the build is not reproducible.
	repro *repro.Source
	// Write a bill of materials beside the image,
	// `<image file name>.spdx.json` (SPDX 2.3 JSON): the OS
	// (`/etc/os-release`), the kernels and the installed packages (name,
	// version, architecture, source package, license where the package
	// database holds it), read offline from the image's final state after
	// provisioning, from dpkg's status file, the rpm database, apk's
	// installed db or pacman's local db; no package manager runs. The
	// build prints the packages added, removed and upgraded against the
	// base image, and the artifact carries the HCP Packer registry labels
	// `os`, `os_version`, `kernel`, `package_count` and `sbom_sha256`.
	// A package database that cannot be read is a warning naming it, and
	// the SBOM says it is incomplete. Default `true`; `false` writes none.
	SBOM bool `mapstructure:"sbom"`

	QemuConfig `mapstructure:",squash"`
	// The SSH communicator of the qemu strategy (Packer's usual `ssh_*`
	// options; `ssh_username` defaults to `root`, the host and port are
	// the forwarded port on 127.0.0.1, the key is made for each build).
	Comm communicator.Config `mapstructure:",squash"`

	ctx interpolate.Context
	// rootFSGiven: root_fs was set, not defaulted (a filesystem image's
	// own kind is the default).
	rootFSGiven bool
	// cmdlineGiven: kernel_cmdline was set, not defaulted (the default
	// follows the tree's architecture).
	cmdlineGiven bool
}

// BootstrapConfig is the `bootstrap` block: a root tree made by a bootstrap
// tool, cached between builds by its inputs.
type BootstrapConfig struct {
	// The tool: `debootstrap` (the only one for now). Its default mirror
	// is used.
	Tool string `mapstructure:"tool" required:"true"`
	// The release, e.g. `bookworm`.
	Suite string `mapstructure:"suite" required:"true"`
	// debootstrap's `--variant`, e.g. `minbase`. Default: debootstrap's.
	Variant string `mapstructure:"variant"`
	// Extra packages (debootstrap's `--include`). A bootable disk needs a
	// kernel: `linux-image-amd64` (`linux-image-arm64` and
	// `grub-efi-arm64-bin`, whose modules make the disk's GRUB, for
	// arm64: validate refuses an arm64 tree without that package).
	Include []string `mapstructure:"include"`
	// The tree's architecture, Debian's name: `amd64` or `arm64` (the
	// architectures the builder makes bootable disks for; others are
	// refused). Default: the host's. Another one is made in debootstrap's
	// two stages: `--foreign` on the host, then `--second-stage` in the
	// chroot under qemu-user (`qemu-user-static`), registered with
	// binfmt_misc for that stage only; that takes many minutes (for arm64
	// with a kernel on a 2-core host, 10 to 15 for the packages, and 10 to
	// 18 for the initramfs, made once after them rather than twice). An
	// arm64 disk is GPT only: an EFI system partition with GRUB
	// `arm64-efi`, no BIOS boot partition. `architecture`, when set, must
	// be the same.
	Arch string `mapstructure:"arch"`
	// Where made trees are kept, keyed by tool, suite, variant, include
	// and architecture. Default `$IMAGEFACTORY_CACHE`, else
	// `/var/cache/imagefactory`.
	CacheDir string `mapstructure:"cache_dir"`
}

// Strategies the builder knows.
const (
	StrategyChroot = "chroot"
)

// Resolv.conf handling modes.
const (
	ResolvCopy = "copy"
	ResolvBind = "bind"
	ResolvKeep = "keep"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Prepare decodes and validates the configuration.
func (c *Config) Prepare(raws ...interface{}) ([]string, error) {
	err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderID,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter: &interpolate.RenderFilter{
			// Rendered when the values are known, during the build.
			Exclude: []string{
				"pre_mount_commands", "post_mount_commands",
				"pre_unmount_commands", "command_wrapper", "mount_path",
				"user_data", "meta_data",
			},
		},
	}, raws...)
	if err != nil {
		return nil, err
	}

	var errs *packer.MultiError
	var warnings []string
	add := func(format string, a ...interface{}) {
		errs = packer.MultiErrorAppend(errs, fmt.Errorf(format, a...))
	}

	sources := 0
	for _, set := range []bool{c.BaseImage != "", c.SourceRootfs != "", c.Bootstrap != nil} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		add("exactly one of base_image (a disk image), source_rootfs (a root tree) and bootstrap (a tree made by debootstrap) is required; %d given", sources)
	}
	c.prepareRootfs(add)
	c.prepareRepro(add)
	if c.UseBackingFile {
		if c.BaseImage == "" || isURL(c.BaseImage) {
			add("use_backing_file needs base_image to be a local file (the overlay names it by path)")
		}
		if c.Format == "" {
			c.Format = "qcow2"
		} else if c.Format != "qcow2" {
			add("use_backing_file makes a qcow2 overlay; format %q cannot have a backing file (use qcow2)", c.Format)
		}
	}
	if isURL(c.BaseImage) && c.BaseImageChecksum == "" {
		add("base_image_checksum is required when base_image is a URL (%s); use \"none\" to skip the check", c.BaseImage)
	}
	if c.Strategy == "" {
		c.Strategy = StrategyChroot
	}
	switch c.Strategy {
	case StrategyChroot:
	case StrategyQemu:
		warnings = c.prepareQemu(add)
	default:
		add("strategy %q is not supported; use %q or %q", c.Strategy, StrategyChroot, StrategyQemu)
	}
	if c.OutputDirectory == "" {
		c.OutputDirectory = "output-" + c.PackerBuildName
	}
	if c.ImageName == "" {
		c.ImageName = c.PackerBuildName
		if c.ImageName == "" {
			c.ImageName = "image"
		}
	}
	if strings.ContainsRune(c.ImageName, '/') {
		add("image_name %q must be a file name, not a path", c.ImageName)
	}
	switch c.Format {
	case "":
		c.Format = "raw"
	case "raw", "qcow2":
	default:
		add("format %q is not supported; use raw or qcow2", c.Format)
	}
	if c.QCOW2Compat != "" {
		if c.Format != "qcow2" {
			add("qcow2_compat applies to format = \"qcow2\" only, not %q", c.Format)
		} else if c.UseBackingFile {
			add("qcow2_compat is not supported with use_backing_file (the overlay is a compat 1.1 qcow2)")
		} else if err := diskimage.CheckQCOW2Compat(c.QCOW2Compat, ""); err != nil {
			add("%v", err)
		}
	}
	if c.DiskSize != "" && !c.fromTree() {
		if _, err := diskimage.ParseSize(c.DiskSize); err != nil {
			add("disk_size: %v", err)
		}
	}
	if c.RootPartition < 0 {
		add("root_partition must be a partition number (1, 2, ...), not %d", c.RootPartition)
	}
	for i, m := range c.ChrootMounts {
		if len(m) != 3 {
			add("chroot_mounts[%d] must be [fstype, source, target], got %d values", i, len(m))
		} else if !filepath.IsAbs(m[2]) {
			add("chroot_mounts[%d]: target %q must be an absolute path inside the image", i, m[2])
		}
	}
	switch c.FATMounts {
	case "":
		c.FATMounts = string(session.FATStaged)
	case string(session.FATStaged), string(session.FATPlaceholder):
	default:
		add("fat_mounts %q is not supported; use %q or %q", c.FATMounts, session.FATStaged, session.FATPlaceholder)
	}
	switch c.ResolvConf {
	case "":
		c.ResolvConf = ResolvCopy
	case ResolvCopy, ResolvBind, ResolvKeep:
	default:
		add("resolv_conf %q is not supported; use copy, bind or keep", c.ResolvConf)
	}
	if c.Architecture != "" && !arch.Arch(c.Architecture).Valid() {
		add("architecture %q is not one of %v (Debian's names: dpkg --print-architecture)", c.Architecture, arch.Known)
	}
	if c.SELinuxRelabel == "" {
		c.SELinuxRelabel = selinux.ModeAuto
	}
	if err := selinux.CheckMode(c.SELinuxRelabel); err != nil {
		add("%v", err)
	}
	for _, f := range c.CopyFiles {
		if !filepath.IsAbs(f) {
			add("copy_files: %q must be an absolute host path (it is copied to the same path in the image)", f)
		}
	}
	if c.CommandWrapper == "" {
		c.CommandWrapper = "{{.Command}}"
	}
	if !packerglue.IsSet(raws, "sbom") {
		c.SBOM = true
	}
	for k := range c.Environment {
		if !envName.MatchString(k) {
			add("environment: %q is not a valid variable name", k)
		}
	}
	if errs != nil && len(errs.Errors) > 0 {
		return warnings, errs
	}
	return warnings, nil
}

func isURL(s string) bool {
	for _, p := range []string{"http://", "https://", "ftp://", "s3::", "gcs::"} {
		if strings.HasPrefix(strings.ToLower(s), p) {
			return true
		}
	}
	return false
}

// prepareRepro reads source_date_epoch, else SOURCE_DATE_EPOCH from the
// environment Packer gives the plugin.
func (c *Config) prepareRepro(add func(string, ...interface{})) {
	if c.SourceDateEpoch != "" {
		e, err := repro.Parse(c.SourceDateEpoch)
		if err != nil {
			add("source_date_epoch: %v", err)
			return
		}
		c.repro = repro.New(e, c.PackerBuildName)
	} else {
		e, ok, err := repro.FromEnv()
		if err != nil {
			add("%v (unset it, or set source_date_epoch in the template)", err)
			return
		}
		if ok {
			c.repro = repro.New(e, c.PackerBuildName)
		}
	}
	if c.repro.Enabled() && c.fromTree() && c.RootFS == rootfs.XFS {
		add("%s", errReproXFS(c.SourceDateEpoch != ""))
	}
}

// errReproXFS refuses a reproducible xfs root: xfsprogs 6.1 fills no
// filesystem from a tree, so the root is filled through a mount, and the
// kernel's xfs then writes inode generations, times, its log and its
// allocation order of its own (docs/reproducible.md).
func errReproXFS(option bool) string {
	if option {
		return "source_date_epoch is set, but an xfs root (root_fs = \"xfs\", or a source_rootfs xfs image) cannot be made reproducible: use root_fs = \"ext4\", or remove source_date_epoch"
	}
	return "SOURCE_DATE_EPOCH is set in the environment, but an xfs root (root_fs = \"xfs\", or a source_rootfs xfs image) cannot be made reproducible: use root_fs = \"ext4\", or unset SOURCE_DATE_EPOCH"
}
