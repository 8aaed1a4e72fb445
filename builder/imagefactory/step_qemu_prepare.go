package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// stepQemuPrepare works on the image offline, before its boot: it records
// what the boot may change (so that exactly that is taken out after it),
// injects the build's key with inject_ssh_key, brings the network up for
// the boot through a network manager the image has (matching the factory
// NIC's MAC), gives an image without a resolver QEMU's for the boot, and
// copies the kernel out for boot_kernel = "image".
type stepQemuPrepare struct{}

func (s *stepQemuPrepare) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	ui := uiOf(state)
	sess := sessionOf(state)
	key := state.Get(stateSSHKey).(qemu.Key)
	g, err := qemu.Inspect(sess.RootFS(), cfg.Comm.SSHUsername, key.AuthorizedKey)
	if err != nil {
		return haltf(state, "looking at the image before its boot: %v", err)
	}
	state.Put(stateGuest, g)
	// The machine follows the image's binaries (stepArchitecture; not
	// known: the host's).
	a, _ := state.Get(stateArch).(arch.Arch)
	target, err := cfg.qemuTarget(a)
	if err != nil {
		return haltf(state, "the qemu strategy: %v", err)
	}
	state.Put(stateQemuTarget, target)
	if target.Arch != hostcap.HostArch() {
		ui.Say(fmt.Sprintf("The image is %s: %s, firmware %s (%s)", a, target.Binary, target.Firmware, target.Code))
	}
	model, why, err := cpuModel(cfg, target, sess.RootFS())
	if err != nil {
		return haltf(state, "cpu_model: %v", err)
	}
	state.Put(stateCPUModel, [2]string{model, why})
	if cfg.InjectSSHKey {
		if err := g.InjectKey(sess.RootFS()); err != nil {
			return haltf(state, "inject_ssh_key: %v", err)
		}
		ui.Say(fmt.Sprintf("Put the build's key in %s/.ssh/authorized_keys (removed after the build)", g.Home))
	}
	mac, err := qemu.NewMAC()
	if err != nil {
		return haltf(state, "making the factory NIC's MAC address: %v", err)
	}
	plan, err := g.ProvideNetwork(sess.RootFS(), mac)
	if err != nil {
		return halt(state, err)
	}
	if plan.Manager == "" {
		ui.Error("Warning: " + plan.String())
	} else {
		ui.Say(plan.String())
	}
	if wrote, err := g.ProvideDNS(sess.RootFS()); err != nil {
		return halt(state, err)
	} else if wrote {
		ui.Say("The image names no DNS server: its /etc/resolv.conf names QEMU's (" + qemu.UserNetDNS + ") for the boot and is put back after it")
	}
	for _, w := range g.Warnings {
		ui.Error("Warning: " + w)
	}

	kernel, initrd := cfg.BootKernel, cfg.BootInitrd
	if kernel == KernelFromImage || initrd == KernelFromImage {
		k, i, err := qemu.ExtractKernel(sess.RootFS(), state.Get(stateQemuDir).(string), initrd == KernelFromImage)
		if err != nil {
			return halt(state, err)
		}
		if kernel == KernelFromImage {
			kernel = k
		}
		if initrd == KernelFromImage {
			initrd = i
		}
		ui.Say("Copied the image's kernel out for a direct kernel boot")
	}
	cmdline := cfg.BootCmdline
	if kernel != "" && cmdline == "" {
		root := "LABEL=" + sess.Root.FS.Label
		if sess.Root.FS.UUID != "" {
			root = "UUID=" + sess.Root.FS.UUID
		}
		cmdline = "root=" + root + " ro console=ttyS0,115200"
		// The kernel mounts the default subvolume unless told otherwise.
		if sub, _, ok := sess.RootSubvolume(); ok && sub != sess.RootDefaultSubvolume() {
			cmdline += " rootflags=" + sub.MountData()
		}
	}
	state.Put(stateKernel, [3]string{kernel, initrd, cmdline})
	return multistep.ActionContinue
}

func (s *stepQemuPrepare) Cleanup(multistep.StateBag) {}

// cpuModel is QEMU's -cpu for this image and why: cpu_model if set, else
// for aarch64 the host's CPU under KVM or max under TCG, else hostcap's
// choice for the accelerator and the x86-64 level the image's glibc needs.
func cpuModel(cfg *Config, t qemuTarget, root *inroot.Root) (string, string, error) {
	for _, a := range cfg.QemuArgs {
		if len(a) > 1 && a[0] == "-cpu" {
			return a[1], "qemuargs' -cpu", nil
		}
	}
	if cfg.CPUModel != "" {
		return cfg.CPUModel, "cpu_model", nil
	}
	return qemu.ImageCPUModel(t, root)
}

// qemuTarget is the machine QEMU emulates for one image.
type qemuTarget = qemu.Target
