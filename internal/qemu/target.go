package qemu

import (
	"fmt"
	"os"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/isalevel"
)

// Target is the machine QEMU emulates for one image.
type Target struct {
	Arch               string // QEMU's name: x86_64, aarch64
	Binary             string
	Firmware           string // bios or uefi
	Code, Vars         string // UEFI firmware and its variables template
	Accel, AccelReason string
}

// TargetChoice is what the user set of the machine; "" leaves a field to
// the image's architecture.
type TargetChoice struct {
	Binary, Firmware, Code, Vars string
	Accelerator                  string // auto (""), kvm or tcg
}

// ChooseTarget chooses the machine for an image whose binaries are of a
// ("" when not known: the host's): each field of c the user set is kept,
// the others follow the image (QEMU binary, firmware and its files, the
// accelerator: KVM never runs another architecture; hostcap decides it).
// Errors name the option or the package to install.
func ChooseTarget(a arch.Arch, c TargetChoice) (Target, error) {
	t := Target{Arch: hostcap.HostArch(), Binary: c.Binary, Firmware: c.Firmware, Code: c.Code, Vars: c.Vars}
	switch a {
	case "", arch.Host(), arch.I386:
	case arch.ARM64:
		t.Arch = a.QEMU()
		if c.Firmware != "" && c.Firmware != FirmwareUEFI {
			return t, fmt.Errorf("firmware %q: an arm64 image boots through UEFI only; set firmware = %q or leave it unset", c.Firmware, FirmwareUEFI)
		}
		t.Firmware = FirmwareUEFI
		if err := t.uefiFiles(DefaultAAVMFCode, DefaultAAVMFVars, "the arm64 image's UEFI firmware", "qemu-efi-aarch64"); err != nil {
			return t, err
		}
	default:
		return t, fmt.Errorf("the image's binaries are %s: QEMU boots amd64 and arm64 images here", a)
	}
	if t.Binary == "" {
		t.Binary = DefaultBinary(t.Arch)
	}
	if t.Firmware == "" {
		t.Firmware = FirmwareBIOS
	}
	if t.Firmware == FirmwareUEFI && t.Arch != "aarch64" {
		if err := t.uefiFiles(DefaultOVMFCode, DefaultOVMFVars, "firmware uefi", "the ovmf package"); err != nil {
			return t, err
		}
	}
	accel, reason, err := hostcap.Accelerator(c.Accelerator, t.Arch)
	if err != nil {
		return t, err
	}
	t.Accel, t.AccelReason = accel, reason
	return t, nil
}

// uefiFiles sets t's firmware code and variables files to code and vars
// where the user gave none, and checks that they exist; an error names
// what, and the package (pkg) that installs the defaults.
func (t *Target) uefiFiles(code, vars, what, pkg string) error {
	if t.Code == "" {
		t.Code = code
	}
	if t.Vars == "" {
		t.Vars = vars
	}
	for _, f := range []string{t.Code, t.Vars} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s: %v (install %s, or set ovmf_code and ovmf_vars)", what, err, pkg)
		}
	}
	return nil
}

// ImageCPUModel is the -cpu for the image under t and why: for aarch64 the
// host's CPU under KVM or Arm64CPU under TCG, else hostcap's choice for
// the accelerator and the x86-64 level the image's glibc needs (root is
// the image's root filesystem).
func ImageCPUModel(t Target, root *inroot.Root) (string, string, error) {
	if t.Arch == "aarch64" {
		if t.Accel == hostcap.AccelKVM {
			return "host", "the host's CPU, passed through by KVM", nil
		}
		return Arm64CPU, "every feature TCG emulates, pointer authentication by QEMU's fast algorithm", nil
	}
	level, lib, err := isalevel.OfImage(root)
	if err != nil {
		return "", "", fmt.Errorf("reading the image's x86-64 level: %v", err)
	}
	model, why, err := hostcap.CPUModel(t.Accel, level)
	if lib != "" && level != isalevel.Unknown {
		why += " (" + lib + ")"
	}
	return model, why, err
}
