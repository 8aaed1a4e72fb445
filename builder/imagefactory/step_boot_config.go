package imagefactory

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// stepBootConfig writes, in the mounted root of a disk made from a tree,
// what ties it to its disk: /etc/fstab, the user's kernel and initrd if
// given, and GRUB's menu. The source tree itself is never written to.
type stepBootConfig struct{}

func (s *stepBootConfig) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	if !cfg.fromTree() {
		return multistep.ActionContinue
	}
	root := sessionOf(state).RootFS()
	uuid := state.Get(stateRootUUID).(string)

	name := "LABEL=" + rootfs.DefaultLabel(cfg.RootFS)
	if cfg.FstabBy == "uuid" {
		name = "UUID=" + uuid
	}
	line := fmt.Sprintf("%s\t/\text4\tdefaults,errors=remount-ro\t0\t1\n", name)
	if cfg.RootFS == rootfs.XFS {
		line = fmt.Sprintf("%s\t/\txfs\tdefaults\t0\t0\n", name)
	}
	fstab := "# Written by imagefactory: the root filesystem, by " + cfg.FstabBy + ".\n" + line
	if err := root.WriteFile("/etc/fstab", []byte(fstab), 0o644); err != nil {
		return haltf(state, "writing /etc/fstab: %v", err)
	}

	kernel, _ := state.Get(stateTreeKernel).(string)
	initrd, _ := state.Get(stateTreeInitrd).(string)
	if cfg.Kernel != "" {
		if err := root.MkdirAll("/boot", 0o755); err != nil {
			return haltf(state, "creating /boot: %v", err)
		}
		kernel = "/boot/" + filepath.Base(cfg.Kernel)
		if err := root.CopyIn(cfg.Kernel, kernel); err != nil {
			return haltf(state, "kernel: %v", err)
		}
		initrd = ""
		if cfg.Initrd != "" {
			initrd = "/boot/" + filepath.Base(cfg.Initrd)
			if err := root.CopyIn(cfg.Initrd, initrd); err != nil {
				return haltf(state, "initrd: %v", err)
			}
		}
	}

	entry := bootloader.Entry{Title: osName(state), Kernel: kernel, Initrd: initrd, Cmdline: cfg.KernelCmdline}
	if err := root.MkdirAll(filepath.Dir(bootloader.ConfigPath), 0o755); err != nil {
		return haltf(state, "creating %s: %v", filepath.Dir(bootloader.ConfigPath), err)
	}
	grubCfg := bootloader.Config(bootloader.Root{UUID: uuid, FSType: cfg.RootFS}, entry)
	if err := root.WriteFile(bootloader.ConfigPath, []byte(grubCfg), 0o644); err != nil {
		return haltf(state, "writing %s: %v", bootloader.ConfigPath, err)
	}
	uiOf(state).Say(fmt.Sprintf("Wrote /etc/fstab (root by %s) and %s: %s %s", cfg.FstabBy, bootloader.ConfigPath, kernel, cfg.KernelCmdline))
	return multistep.ActionContinue
}

func (s *stepBootConfig) Cleanup(multistep.StateBag) {}

// osName is the tree's PRETTY_NAME from os-release, for the menu.
func osName(state multistep.StateBag) string {
	root := sessionOf(state).RootFS()
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := root.ReadFile(p)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	return "Linux"
}
