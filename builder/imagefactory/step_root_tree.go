package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// stepRootTree makes source_rootfs a directory to read (a tarball is
// unpacked into the output directory, under a hidden name, and removed at
// the end) and finds the kernel in it, before anything is written.
type stepRootTree struct {
	handle cleanup.Handle
	taken  bool
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
			tree = filepath.Join(cfg.OutputDirectory, "."+cfg.ImageName+".tree")
			h, err := journalOf(state).Take(cleanup.FileEntry(tree))
			if err != nil {
				return halt(state, err)
			}
			s.handle, s.taken = h, true
			ui.Say(fmt.Sprintf("Unpacking %s...", cfg.SourceRootfs))
			if err := rootfs.Extract(ctx, cfg.SourceRootfs, tree); err != nil {
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
		return haltf(state, "root tree %s has no /etc: it is not a root filesystem", tree)
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
		return multistep.ActionContinue
	}
	kernel, initrd, err := bootloader.FindKernel(root)
	if errors.Is(err, bootloader.ErrNoKernel) {
		return haltf(state, "root tree %s has no kernel (/boot/vmlinuz-*): install one in it (bootstrap include = [\"linux-image-amd64\"]) or give kernel (and initrd)", describeSource(cfg))
	}
	if err != nil {
		return haltf(state, "root tree %s: looking for the kernel: %v", tree, err)
	}
	ui.Say(fmt.Sprintf("Kernel %s, initrd %s", kernel, orNoneStr(initrd)))
	state.Put(stateTreeKernel, kernel)
	state.Put(stateTreeInitrd, initrd)
	return multistep.ActionContinue
}

func (s *stepRootTree) Cleanup(state multistep.StateBag) {
	if s.taken {
		if err := journalOf(state).Release(s.handle); err != nil {
			uiOf(state).Error(fmt.Sprintf("removing the unpacked root tree: %v", err))
		}
	}
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
