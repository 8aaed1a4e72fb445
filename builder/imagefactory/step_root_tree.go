package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fsimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// stepRootTree makes source_rootfs a directory to read and finds the
// kernel in it, before anything is written. A directory is read as it is;
// a filesystem image (told by its superblock) is mounted read-only; any
// other file is unpacked as a tarball into the output directory, under a
// hidden name, and removed at the end.
type stepRootTree struct {
	handles []cleanup.Handle // working files, in the order taken
	mounted *fsimage.Mounted
}

// kernelModules says where the modules of the kernel option come from.
type kernelModules struct {
	Release string // uname -r of the kernel
	HostDir string // copied to /lib/modules/Release; "" when the tree has them
}

func (s *stepRootTree) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	ui := uiOf(state)
	if cfg.SourceRootfs != "" {
		fi, err := os.Stat(cfg.SourceRootfs)
		if err != nil {
			return haltf(state, "source_rootfs: %v", err)
		}
		tree := cfg.SourceRootfs
		if !fi.IsDir() {
			if tree, err = s.open(ctx, state); err != nil {
				return halt(state, err)
			}
		}
		state.Put(stateRootTree, tree)
	}
	tree := state.Get(stateRootTree).(string)
	root, err := inroot.Open(tree)
	if err != nil {
		return haltf(state, "root tree %s: %v", tree, err)
	}
	defer root.Close()
	if ok, _ := root.Exists("/etc"); !ok {
		return haltf(state, "root tree %s has no /etc: it is not a root filesystem", describeSource(cfg))
	}
	// The disk's layout and boot loader follow the tree's binaries. A tree
	// whose binaries say nothing is taken as the host's (the shell check
	// after the mount names what is missing).
	if a, err := arch.OfImage(root); err == nil {
		state.Put(stateTreeArch, a)
		if err := bootdisk.Check(cfg.PartitionTable, string(a)); err != nil {
			return haltf(state, "root tree %s: %v", describeSource(cfg), err)
		}
		if a != arch.Host() {
			ui.Say(fmt.Sprintf("The tree's binaries are %s", a))
		}
	}
	if cfg.Kernel != "" {
		for _, f := range []string{cfg.Kernel, cfg.Initrd} {
			if f == "" {
				continue
			}
			if fi, err := os.Stat(f); err != nil || !fi.Mode().IsRegular() {
				return haltf(state, "kernel/initrd %s is not a readable file: %v", f, err)
			}
		}
		mods, warning, err := findKernelModules(cfg, root)
		if err != nil {
			return halt(state, err)
		}
		if warning != "" {
			ui.Error("Warning: " + warning)
		}
		state.Put(stateKernelModules, mods)
		return multistep.ActionContinue
	}
	kernel, initrd, err := bootloader.FindKernel(root)
	if errors.Is(err, bootloader.ErrNoKernel) {
		if info, ok := state.GetOk(stateSourceFS); ok {
			return haltf(state, "source_rootfs %s (an %s filesystem image) has no kernel (/boot/vmlinuz-*): give kernel and initrd, a kernel on this host to copy into its /boot with its modules (kernel_modules)%s",
				cfg.SourceRootfs, info.(fsimage.Info).Type, hostKernelHint())
		}
		return haltf(state, "root tree %s has no kernel (/boot/vmlinuz-*): install one in it (bootstrap include = [\"linux-image-amd64\"]) or give kernel and initrd%s", describeSource(cfg), hostKernelHint())
	}
	if err != nil {
		return haltf(state, "root tree %s: looking for the kernel: %v", tree, err)
	}
	ui.Say(fmt.Sprintf("Kernel %s, initrd %s", kernel, orNoneStr(initrd)))
	state.Put(stateTreeKernel, kernel)
	state.Put(stateTreeInitrd, initrd)
	return multistep.ActionContinue
}

// open makes a source_rootfs file a tree: a filesystem image mounted
// read-only, or a tarball unpacked.
func (s *stepRootTree) open(ctx context.Context, state multistep.StateBag) (string, error) {
	cfg := configOf(state)
	ui := uiOf(state)
	src := cfg.SourceRootfs
	image, container, err := s.unwrap(ctx, state)
	if err != nil {
		return "", err
	}
	info, perr := fsimage.Probe(image)
	switch {
	case perr == nil:
		return s.mount(state, image, info)
	case container != "" && errors.Is(perr, fsimage.ErrNotFilesystem):
		return "", fmt.Errorf("source_rootfs %s is %s whose content is not an ext2/3/4 or xfs filesystem%s%s",
			src, container, strings.TrimPrefix(perr.Error(), fsimage.ErrNotFilesystem.Error()), baseImageHint(perr))
	case container != "":
		return "", fmt.Errorf("source_rootfs %s (%s): %w", src, container, perr)
	case errors.Is(perr, fsimage.ErrUnsupported):
		if strings.Contains(perr.Error(), "features") {
			return "", fmt.Errorf("source_rootfs %s: %w; give its files as a directory or a tarball instead", src, perr)
		}
		return "", fmt.Errorf("source_rootfs %s: %w", src, perr)
	}
	tree, err := s.workFile(state, ".tree")
	if err != nil {
		return "", err
	}
	ui.Say(fmt.Sprintf("Unpacking %s...", src))
	if err := rootfs.Extract(ctx, src, tree); err != nil {
		if !errors.Is(perr, fsimage.ErrNotFilesystem) || ctx.Err() != nil {
			return "", err
		}
		holds := strings.TrimPrefix(perr.Error(), fsimage.ErrNotFilesystem.Error()) + baseImageHint(perr)
		tar := err
		if inner := errors.Unwrap(err); inner != nil {
			tar = inner
		}
		return "", fmt.Errorf("source_rootfs %s is neither a directory, a tarball tar can read (.tar, .tar.gz, .tar.xz, .tar.zst) nor an ext2/3/4 or xfs filesystem image%s; %v",
			src, holds, tar)
	}
	return tree, nil
}

// unwrap gives the file to probe for a filesystem: source_rootfs itself,
// or, when it is a qcow2 or compressed filesystem image, a sparse raw
// copy of its content in the output directory (container says what it
// was: fsimage.Container).
func (s *stepRootTree) unwrap(ctx context.Context, state multistep.StateBag) (image, container string, err error) {
	src := configOf(state).SourceRootfs
	container, err = fsimage.Container(src)
	if err != nil || container == "" {
		return src, "", err
	}
	work, err := s.workFile(state, ".source.raw")
	if err != nil {
		return "", "", err
	}
	uiOf(state).Say(fmt.Sprintf("source_rootfs %s is %s: writing its content to a raw working copy (%s) to read its filesystem...", src, container, work))
	if err := fsimage.Unwrap(ctx, src, work); err != nil {
		return "", "", fmt.Errorf("source_rootfs %s (%s): %w", src, container, err)
	}
	return work, container, nil
}

// workFile journals a working file or directory of the build, removed at
// the end: the output directory's ".NAME" + suffix.
func (s *stepRootTree) workFile(state multistep.StateBag, suffix string) (string, error) {
	cfg := configOf(state)
	p := filepath.Join(cfg.OutputDirectory, "."+cfg.ImageName+suffix)
	h, err := journalOf(state).Take(cleanup.FileEntry(p))
	if err != nil {
		return "", err
	}
	s.handles = append(s.handles, h)
	return p, nil
}

// baseImageHint says where a whole disk belongs.
func baseImageHint(perr error) string {
	if strings.Contains(perr.Error(), "whole disk") {
		return " (a whole disk image is a base_image)"
	}
	return ""
}

// mount mounts a filesystem image read-only for the disk to be made from,
// and makes the new root of the image's kind unless root_fs says otherwise.
func (s *stepRootTree) mount(state multistep.StateBag, image string, info fsimage.Info) (string, error) {
	cfg := configOf(state)
	ui := uiOf(state)
	if !cfg.rootFSGiven && info.Type == fsimage.XFS {
		cfg.RootFS = rootfs.XFS // read by stepMakeDisk and stepBootConfig
	}
	if cfg.repro.Enabled() && cfg.RootFS == rootfs.XFS {
		return "", fmt.Errorf("source_rootfs %s is an xfs filesystem image: %s", cfg.SourceRootfs, errReproXFS(cfg.SourceDateEpoch != ""))
	}
	if cfg.RootFS == rootfs.XFS && len(info.Label) > rootfs.MaxXFSLabel {
		return "", fmt.Errorf("source_rootfs %s: root_fs xfs cannot keep its %s filesystem's label %q (xfs labels hold %d bytes), which its fstab may name: use root_fs = \"ext4\"",
			cfg.SourceRootfs, info.Type, info.Label, rootfs.MaxXFSLabel)
	}
	m, err := fsimage.Mount(journalOf(state), image, info, state.Get(stateMountPath).(string)+"-source")
	if err != nil {
		return "", fmt.Errorf("source_rootfs %s: %w", cfg.SourceRootfs, err)
	}
	s.mounted = m
	state.Put(stateSourceMount, m)
	state.Put(stateSourceFS, info)
	ui.Say(fmt.Sprintf("source_rootfs %s is an %s filesystem image (UUID %s, label %q, %d MiB): mounted read-only at %s",
		cfg.SourceRootfs, info.Type, info.UUID, info.Label, info.Size>>20, m.Dir))
	if info.Unclean {
		ui.Error(fmt.Sprintf("Warning: the %s filesystem in %s was not cleanly unmounted: its journal holds writes that were never put in place. "+
			"They are not replayed (the file is only read), so the new disk lacks them. To keep them, replay the journal on a raw copy "+
			"of the filesystem (e2fsck -fy COPY) and give the copy.", info.Type, cfg.SourceRootfs))
	}
	return m.Dir, nil
}

func (s *stepRootTree) Cleanup(state multistep.StateBag) {
	if s.mounted != nil {
		if err := s.mounted.Close(); err != nil {
			uiOf(state).Error(fmt.Sprintf("releasing the filesystem image: %v", err))
		}
	}
	for i := len(s.handles) - 1; i >= 0; i-- {
		if err := journalOf(state).Release(s.handles[i]); err != nil {
			uiOf(state).Error(fmt.Sprintf("removing a working copy of source_rootfs: %v", err))
		}
	}
	s.handles = nil
}

// findKernelModules finds the modules of the kernel option: the tree's
// /lib/modules/RELEASE if it has them, else kernel_modules or the host's
// /lib/modules/RELEASE (a warning, not an error, when neither exists: the
// initrd may be all the image needs).
func findKernelModules(cfg *Config, root *inroot.Root) (kernelModules, string, error) {
	release, err := bootloader.KernelVersion(cfg.Kernel)
	if err != nil {
		if cfg.KernelModules == "" {
			// Not an x86 bzImage (arm64's Image has no release in it).
			return kernelModules{}, fmt.Sprintf("no modules copied: %v (give kernel_modules)", err), nil
		}
		release = filepath.Base(cfg.KernelModules) // named as /lib/modules/ names it
	}
	mods := kernelModules{Release: release}
	if fi, err := root.Stat("/lib/modules/" + release); err == nil && fi.IsDir() {
		return mods, "", nil
	}
	dir := cfg.KernelModules
	if dir == "" {
		dir = "/lib/modules/" + release
	}
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		mods.HostDir = dir
		return mods, "", nil
	case cfg.KernelModules != "":
		return mods, "", fmt.Errorf("kernel_modules %s is not a directory: %v", cfg.KernelModules, err)
	}
	return mods, fmt.Sprintf("kernel %s (release %s): no modules copied: neither the tree nor this host has /lib/modules/%s; "+
		"the image has only what the initrd holds (give kernel_modules)", cfg.Kernel, release, release), nil
}

// hostKernelHint names this host's own kernel and initrd, when /boot has
// them, as a kernel the user may give.
func hostKernelHint() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	release := unix.ByteSliceToString(u.Release[:])
	k, i := "/boot/vmlinuz-"+release, "/boot/initrd.img-"+release
	if _, err := os.Stat(k); err != nil {
		return ""
	}
	if _, err := os.Stat(i); err != nil {
		return fmt.Sprintf(" (this host runs %s)", k)
	}
	return fmt.Sprintf(" (this host runs %s with %s)", k, i)
}

func describeSource(cfg *Config) string {
	if cfg.SourceRootfs != "" {
		return cfg.SourceRootfs
	}
	return fmt.Sprintf("(%s %s)", cfg.Bootstrap.Tool, cfg.Bootstrap.Suite)
}

func orNoneStr(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// treeArch is the architecture of the tree a disk is made from (Debian's
// name), "" when not known.
func treeArch(state multistep.StateBag) string {
	a, _ := state.Get(stateTreeArch).(arch.Arch)
	return string(a)
}
