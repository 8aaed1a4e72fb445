// Package qemu boots a disk image under QEMU for the builder's qemu
// strategy: the command line, the process (journaled, so a killed build's
// QEMU is reaped), a QMP client for ACPI power-down and quit, the serial
// console saved to a file, and the cloud-init NoCloud seed with a fresh
// SSH key. It knows nothing of Packer.
package qemu

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/isalevel"
)

// Firmwares.
const (
	FirmwareBIOS = "bios"
	FirmwareUEFI = "uefi"
)

// NICSlot is the factory NIC's PCI slot on the machine's root bus.
const NICSlot = "0x3"

var macAddress = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)

// Default OVMF files (Debian's ovmf package), and AAVMF's, the same
// firmware for arm64 (Debian's qemu-efi-aarch64: 64 MiB images, the size
// the virt machine's two flash devices want).
const (
	DefaultOVMFCode  = "/usr/share/OVMF/OVMF_CODE.fd"
	DefaultOVMFVars  = "/usr/share/OVMF/OVMF_VARS.fd"
	DefaultAAVMFCode = "/usr/share/AAVMF/AAVMF_CODE.fd"
	DefaultAAVMFVars = "/usr/share/AAVMF/AAVMF_VARS.fd"
)

// Arm64CPU is the -cpu of an aarch64 guest under TCG: max has every
// feature QEMU emulates, and pauth-impdef=on computes pointer
// authentication codes with QEMU's own fast function instead of the
// architected QARMA5, "much faster to emulate" (QEMU's
// docs/system/arm/cpu-features.rst); a kernel built with pointer
// authentication (Debian's) signs every return address.
const Arm64CPU = "max,pauth-impdef=on"

// Options describe one virtual machine.
type Options struct {
	Binary      string // qemu-system-<arch>; default from Arch
	Arch        string // x86_64 (default), aarch64, ...
	Accelerator string // kvm, tcg, or auto ("" too): hostcap.Accelerator decides
	CPUModel    string // -cpu; "" for hostcap.CPUModel's for an image of unknown level
	CPUs        int
	MemoryMiB   int
	Firmware    string // bios (default) or uefi
	OVMFCode    string // read-only firmware code (uefi)
	OVMFVars    string // this machine's own, writable copy of the variables (uefi)

	Disk       string // the disk, raw
	DiskFormat string // raw (default) or qcow2
	Seed       string // cidata ISO, or ""

	Kernel  string // direct kernel boot, or "" to boot the disk
	Initrd  string
	Cmdline string

	SSHPort    int    // host port on 127.0.0.1 forwarded to the guest's 22
	MAC        string // the NIC's MAC address (aa:bb:cc:dd:ee:ff), or "" for QEMU's default
	QMPSocket  string // unix socket of the QMP monitor
	ConsoleLog string // the serial console goes here

	Extra [][]string // qemuargs: appended as given
}

// DefaultBinary is qemu-system-<arch> for the host's architecture.
func DefaultBinary(arch string) string {
	if arch == "" {
		arch = hostcap.HostArch()
	}
	return "qemu-system-" + arch
}

// Args builds QEMU's command line (without the binary). An accelerator
// left to auto is decided by hostcap (which may probe KVM: seconds, once
// per process).
func Args(o Options) ([]string, error) {
	if o.Disk == "" {
		return nil, fmt.Errorf("qemu: no disk")
	}
	arch := o.Arch
	if arch == "" {
		arch = hostcap.HostArch()
	}
	accel := o.Accelerator
	switch accel {
	case hostcap.AccelKVM, hostcap.AccelTCG:
	case "", hostcap.AccelAuto:
		var err error
		if accel, _, err = hostcap.Accelerator(accel, arch); err != nil {
			return nil, fmt.Errorf("qemu: %v", err)
		}
	default:
		return nil, fmt.Errorf("qemu: accelerator %q is not kvm, tcg or auto", accel)
	}
	cpus, mem := o.CPUs, o.MemoryMiB
	if cpus <= 0 {
		cpus = 1
	}
	if mem <= 0 {
		mem = 1024
	}
	format := o.DiskFormat
	if format == "" {
		format = "raw"
	}

	var a []string
	add := func(v ...string) { a = append(a, v...) }

	machine := "q35"
	if arch == "aarch64" {
		machine = "virt"
	}
	cpu := o.CPUModel
	switch {
	case cpu != "":
	case arch == "aarch64" && accel == hostcap.AccelKVM:
		cpu = "host"
	case arch == "aarch64":
		cpu = Arm64CPU
	default:
		var err error
		if cpu, _, err = hostcap.CPUModel(accel, isalevel.Unknown); err != nil {
			return nil, fmt.Errorf("qemu: %v", err)
		}
	}
	add("-machine", machine+",accel="+accel)
	add("-cpu", cpu)
	add("-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(mem))
	// No window, no default devices we did not ask for; the serial console
	// is the only console.
	add("-nodefaults", "-display", "none", "-vga", "none")
	add("-no-reboot")

	switch o.Firmware {
	case "", FirmwareBIOS:
		if arch == "aarch64" {
			return nil, fmt.Errorf("qemu: %s has no BIOS firmware; use uefi", arch)
		}
	case FirmwareUEFI:
		if o.OVMFCode == "" || o.OVMFVars == "" {
			return nil, fmt.Errorf("qemu: uefi firmware needs the OVMF code and a writable copy of the variables")
		}
		add("-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+escape(o.OVMFCode))
		add("-drive", "if=pflash,format=raw,unit=1,file="+escape(o.OVMFVars))
	default:
		return nil, fmt.Errorf("qemu: firmware %q is not bios or uefi", o.Firmware)
	}

	add("-drive", "file="+escape(o.Disk)+",if=none,id=disk0,format="+format+",discard=unmap,detect-zeroes=unmap")
	add("-device", "virtio-blk-pci,drive=disk0,bootindex=1")
	if o.Seed != "" {
		add("-drive", "file="+escape(o.Seed)+",if=none,id=seed0,format=raw,readonly=on")
		add("-device", "virtio-blk-pci,drive=seed0")
	}
	if o.Kernel != "" {
		add("-kernel", o.Kernel)
		if o.Initrd != "" {
			add("-initrd", o.Initrd)
		}
		if o.Cmdline != "" {
			add("-append", o.Cmdline)
		}
	} else if o.Initrd != "" || o.Cmdline != "" {
		return nil, fmt.Errorf("qemu: an initrd or a kernel command line needs a kernel")
	}

	if o.SSHPort <= 0 || o.SSHPort > 65535 {
		return nil, fmt.Errorf("qemu: SSH port %d out of range", o.SSHPort)
	}
	// User-mode networking: no privileges, and the only way in is the
	// forwarded port, bound to the host's loopback (plus what a user's own
	// net0 forwards).
	netdev, err := UserNetdev(o.Extra)
	if err != nil {
		return nil, fmt.Errorf("qemu: %v", err)
	}
	if netdev == "" {
		netdev = "user,id=net0"
	}
	add("-netdev", fmt.Sprintf("%s,hostfwd=tcp:127.0.0.1:%d-:22", netdev, o.SSHPort))
	// A fixed slot: the NIC's name in the guest does not depend on which
	// other devices come first (enp0s3 on q35 under systemd's naming).
	nic := "virtio-net-pci,netdev=net0,addr=" + NICSlot
	if o.MAC != "" {
		if !macAddress.MatchString(o.MAC) {
			return nil, fmt.Errorf("qemu: MAC address %q is not six colon-separated hex bytes", o.MAC)
		}
		nic += ",mac=" + o.MAC
	}
	add("-device", nic)
	add("-device", "virtio-rng-pci")

	if o.ConsoleLog != "" {
		add("-serial", "file:"+o.ConsoleLog)
	}
	if o.QMPSocket != "" {
		add("-qmp", "unix:"+o.QMPSocket+",server=on,wait=off")
	}
	for _, e := range o.Extra {
		if !isNet0(e) {
			add(e...)
		}
	}
	return a, nil
}

// UserNetdev is the value of a `-netdev` of id net0 in extra (qemuargs),
// which replaces the builder's own network, as in packer-plugin-qemu; ""
// when there is none. The builder forwards SSH through it, so it must be
// user-mode networking, and one only. Errors say which rule it breaks.
func UserNetdev(extra [][]string) (string, error) {
	found := ""
	for _, e := range extra {
		if !isNet0(e) {
			continue
		}
		if len(e) != 2 {
			return "", fmt.Errorf("-netdev of id net0 takes one value, got %q", e[1:])
		}
		if found != "" {
			return "", fmt.Errorf("two -netdev of id net0")
		}
		if !strings.HasPrefix(e[1], "user,") {
			return "", fmt.Errorf("-netdev %s: net0 must be user-mode networking (user,id=net0,...): the build's SSH is forwarded through it", e[1])
		}
		found = e[1]
	}
	return found, nil
}

// isNet0 says a qemuargs entry is a -netdev of id net0.
func isNet0(e []string) bool {
	if len(e) < 2 || e[0] != "-netdev" {
		return false
	}
	for _, kv := range strings.Split(e[1], ",") {
		if kv == "id=net0" {
			return true
		}
	}
	return false
}

// escape doubles commas, QEMU's escape for a comma inside an option value.
func escape(p string) string { return strings.ReplaceAll(p, ",", ",,") }
