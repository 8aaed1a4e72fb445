package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
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

	label := state.Get(stateRootLabel).(string)
	name := "LABEL=" + label
	if cfg.FstabBy == "uuid" {
		name = "UUID=" + uuid
	}
	wrote := ""
	if _, ok := state.GetOk(stateSourceFS); ok {
		// A filesystem image's root kept its identity: its fstab stays.
		if err := fixImageFstab(state, fstab.RootFS{UUID: uuid, Label: label, Type: cfg.RootFS, Spec: name}); err != nil {
			return halt(state, err)
		}
	} else {
		line := fmt.Sprintf("%s\t/\text4\tdefaults,errors=remount-ro\t0\t1\n", name)
		if cfg.RootFS == rootfs.XFS {
			line = fmt.Sprintf("%s\t/\txfs\tdefaults\t0\t0\n", name)
		}
		text := "# Written by imagefactory: the root filesystem, by " + cfg.FstabBy + ".\n" + line
		if err := root.WriteFile("/etc/fstab", []byte(text), 0o644); err != nil {
			return haltf(state, "writing /etc/fstab: %v", err)
		}
		wrote = "/etc/fstab (root by " + cfg.FstabBy + ") and "
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
		if mods := state.Get(stateKernelModules).(kernelModules); mods.HostDir != "" {
			dst := "/lib/modules/" + mods.Release
			if err := root.CopyIn(mods.HostDir, dst); err != nil {
				return haltf(state, "kernel_modules: %v", err)
			}
			uiOf(state).Say(fmt.Sprintf("Copied the modules of kernel %s from %s to %s", mods.Release, mods.HostDir, dst))
		}
	}

	cmdline := cfg.KernelCmdline
	arm64 := treeArch(state) == bootdisk.Arm64
	if arm64 && !cfg.cmdlineGiven {
		cmdline = bootloader.DefaultCmdlineArm64 // a source_rootfs found to be arm64
	}
	entry := bootloader.Entry{Title: osName(state), Kernel: kernel, Initrd: initrd, Cmdline: cmdline, EFIConsole: arm64}
	if err := root.MkdirAll(filepath.Dir(bootloader.ConfigPath), 0o755); err != nil {
		return haltf(state, "creating %s: %v", filepath.Dir(bootloader.ConfigPath), err)
	}
	grubCfg := bootloader.Config(bootloader.Root{UUID: uuid, FSType: cfg.RootFS}, entry)
	if err := root.WriteFile(bootloader.ConfigPath, []byte(grubCfg), 0o644); err != nil {
		return haltf(state, "writing %s: %v", bootloader.ConfigPath, err)
	}
	uiOf(state).Say(fmt.Sprintf("Wrote %s%s: %s %s", wrote, bootloader.ConfigPath, kernel, cmdline))
	return multistep.ActionContinue
}

func (s *stepBootConfig) Cleanup(multistep.StateBag) {}

// fixImageFstab keeps a filesystem image's /etc/fstab, changing only a
// "/" line that does not name the new root (fstab.FixRoot), and says what
// it changed.
func fixImageFstab(state multistep.StateBag, r fstab.RootFS) error {
	root := sessionOf(state).RootFS()
	old, err := root.ReadFile("/etc/fstab")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading the image's /etc/fstab: %w", err)
	}
	text, change, err := fstab.FixRoot(string(old), r)
	if err != nil {
		return fmt.Errorf("source_rootfs %s: its /etc/fstab: %w", configOf(state).SourceRootfs, err)
	}
	elsewhere, _ := fstab.Elsewhere(text, r) // FixRoot parsed it
	for _, e := range elsewhere {
		uiOf(state).Error(fmt.Sprintf("Warning: the image's /etc/fstab line %d mounts %s on %s without nofail: the new disk holds only the root, "+
			"so a machine without that device waits for it at boot, then stops in emergency mode (add nofail in a provisioner, or remove the line)",
			e.Line, e.Spec, e.File))
	}
	if change == "" {
		uiOf(state).Say("Kept the image's /etc/fstab: its / line names the root, which kept its UUID and label")
		return nil
	}
	if err := root.WriteFile("/etc/fstab", []byte(text), 0o644); err != nil {
		return fmt.Errorf("writing /etc/fstab: %w", err)
	}
	uiOf(state).Say("Changed the image's /etc/fstab, " + change)
	return nil
}

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
