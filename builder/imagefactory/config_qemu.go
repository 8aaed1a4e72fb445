//go:generate ../../scripts/struct-markdown.sh

package imagefactory

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// QemuConfig holds the options of `strategy = "qemu"`: the working disk is
// booted under QEMU and provisioned over SSH. They are ignored by the
// chroot strategy.
type QemuConfig struct {
	// The QEMU binary. Defaults to the one of the image's architecture,
	// read from its binaries: `qemu-system-x86_64` for amd64,
	// `qemu-system-aarch64` for arm64 (machine `virt`, firmware AAVMF,
	// `-cpu max` under TCG; never KVM on a host of another architecture).
	QemuBinary string `mapstructure:"qemu_binary"`
	// `auto` (default), `kvm` or `tcg`. `auto` uses KVM only where it has
	// been shown to run a guest: once per build, a tiny test guest must
	// reach 64-bit long mode under `/dev/kvm` and run a loop at hardware
	// speed within 5 s; else `tcg` (software emulation: several times
	// slower). The build says which one it chose and why. `kvm` on a host
	// where that proof fails is refused before anything boots.
	Accelerator string `mapstructure:"accelerator"`
	// The `-cpu` model, as in packer-plugin-qemu: a name that
	// `qemu-system-x86_64 -cpu help` lists, with features if wanted
	// (`Haswell,+pdpe1gb`). By default the builder chooses: `host` under
	// KVM; for arm64 under TCG, `max,pauth-impdef=on` (every feature, with
	// pointer authentication by QEMU's fast algorithm instead of QARMA5:
	// QEMU's docs/system/arm/cpu-features.rst); for x86-64 under TCG, the least model that has the x86-64 level the image's
	// glibc is built for (read from the GNU property note of its
	// `libc.so.6`), since TCG runs glibc's newer string functions slower:
	// `qemu64` for the baseline (Debian, Ubuntu, Fedora), `Nehalem` for
	// x86-64-v2 (RHEL 9), `max` for x86-64-v3 (RHEL 10) or a level not
	// known. The build says which it chose and why. A `-cpu` in `qemuargs`
	// overrides it.
	CPUModel string `mapstructure:"cpu_model"`
	// Virtual CPUs. Defaults to 1.
	CPUs int `mapstructure:"cpus"`
	// Memory in MiB. Defaults to 1024.
	Memory int `mapstructure:"memory"`
	// Extra QEMU arguments, each a list appended as given, as in
	// packer-plugin-qemu: `[["-device", "virtio-balloon"]]`. A `-netdev`
	// whose id is `net0` replaces the builder's own user-mode network, as
	// packer-plugin-qemu's does; the builder adds its SSH forward to it, so
	// it only says what else to forward:
	// `[["-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80"]]`.
	QemuArgs [][]string `mapstructure:"qemuargs"`
	// `bios` (SeaBIOS, default) or `uefi` (OVMF: `ovmf_code`, with a
	// per-build copy of `ovmf_vars`). An arm64 image boots with `uefi`
	// only (the default for it).
	Firmware string `mapstructure:"firmware"`
	// The UEFI firmware code (packer-plugin-qemu's `efi_firmware_code`).
	// Defaults to `/usr/share/OVMF/OVMF_CODE.fd`, or for an arm64 image
	// `/usr/share/AAVMF/AAVMF_CODE.fd` (Debian's `qemu-efi-aarch64`).
	OVMFCode string `mapstructure:"ovmf_code"`
	// The UEFI variables template, copied for each build
	// (packer-plugin-qemu's `efi_firmware_vars`). Defaults to
	// `/usr/share/OVMF/OVMF_VARS.fd`, or for an arm64 image
	// `/usr/share/AAVMF/AAVMF_VARS.fd`.
	OVMFVars string `mapstructure:"ovmf_vars"`
	// For `strategy = "qemu"`: boot this kernel directly instead of the
	// disk's boot loader: a host path, or `image` for the image's own
	// `/vmlinuz` (else the newest `/boot/vmlinuz-*`), copied out before the
	// boot. Without it the disk boots by itself (its boot loader, through
	// `firmware`). Not to be confused with `kernel`, which a disk made from
	// a root tree installs.
	BootKernel string `mapstructure:"boot_kernel"`
	// The initrd for `boot_kernel`: a host path, or `image` for the image's
	// `/initrd.img` (else the `/boot/initrd.img-*` matching the kernel).
	// Defaults to `image` when `boot_kernel` is `image`.
	BootInitrd string `mapstructure:"boot_initrd"`
	// The kernel command line for `boot_kernel`. Defaults to
	// `root=UUID=<the root filesystem's UUID> ro console=ttyS0,115200`,
	// plus `rootflags=subvolid=N` when the root is a btrfs subvolume other
	// than the default one.
	BootCmdline string `mapstructure:"boot_cmdline"`
	// The cloud-init user-data of the NoCloud seed (a `cidata` ISO9660
	// built in Go and attached as a second disk). The default lets
	// `ssh_username` log in with the build's key and changes nothing
	// else it can avoid (hostname, apt sources and locale preserved).
	// Your own must authorize the key itself: use
	// `{{ .SSHPublicKey }}`.
	UserData string `mapstructure:"user_data"`
	// The cloud-init meta-data. Defaults to a fresh `instance-id` per
	// build.
	MetaData string `mapstructure:"meta_data"`
	// For images without cloud-init: put the build's public key in
	// `ssh_username`'s `authorized_keys` offline before the boot (and
	// let sshd accept keys for root through a drop-in in
	// `/etc/ssh/sshd_config.d`); both are removed after the shutdown.
	InjectSSHKey bool `mapstructure:"inject_ssh_key"`
	// A command that shuts the guest down, run over SSH after the
	// provisioners (`shutdown -P now`, `sudo poweroff`). Without it the
	// builder presses the ACPI power button through QMP, and sends
	// ctrl-alt-delete 20 s later if the guest is still up (images without
	// D-Bus run no logind, and nothing hears the button; QEMU runs with
	// `-no-reboot`, so the guest's clean reboot ends it).
	ShutdownCommand string `mapstructure:"shutdown_command"`
	// How long the guest may take to power off before QEMU is quit by
	// force (with a warning). Defaults to `5m`.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// How long the guest may make no progress while the build waits for
	// SSH. A guest that writes nothing on its serial console and does no
	// disk I/O for that long is taken as hung: the build fails with the
	// last lines of its console instead of waiting out `ssh_timeout`. A
	// QEMU that exits while the build waits fails it at once, with QEMU's
	// message. Defaults to `5m`.
	BootStallTimeout time.Duration `mapstructure:"boot_stall_timeout"`

	// The accelerator Prepare chose (kvm or tcg) and why, in one line.
	accel, accelReason string
	// Which of the machine's options were set, not defaulted: the
	// defaults follow the image's architecture (qemuTarget).
	binaryGiven, firmwareGiven, codeGiven, varsGiven bool
}

// Strategies the builder knows.
const StrategyQemu = "qemu"

// KernelFromImage is the value of kernel and initrd that takes them from
// the image's own /boot.
const KernelFromImage = "image"

// prepareQemu fills the qemu strategy's defaults and checks its options;
// it returns warnings for chroot options that do not apply.
func (c *Config) prepareQemu(add func(string, ...interface{})) []string {
	q := &c.QemuConfig
	var warns []string
	for _, o := range []struct {
		name string
		set  bool
	}{
		{"chroot_mounts", len(c.ChrootMounts) > 0}, {"copy_files", len(c.CopyFiles) > 0},
		{"pre_mount_commands", len(c.PreMountCommands) > 0}, {"post_mount_commands", len(c.PostMountCommands) > 0},
		{"pre_unmount_commands", len(c.PreUnmountCommands) > 0}, {"environment", len(c.Environment) > 0},
		{"allow_service_starts", c.AllowServiceStarts}, {"resolv_conf", c.ResolvConf != ""},
	} {
		if o.set {
			warns = append(warns, fmt.Sprintf("%s is an option of the chroot strategy; strategy \"qemu\" ignores it", o.name))
		}
	}
	if q.Accelerator == "" {
		q.Accelerator = hostcap.AccelAuto
	}
	// Decided here, so that a KVM that cannot run a guest fails the build
	// in seconds, before anything boots.
	if accel, reason, err := hostcap.Accelerator(q.Accelerator, ""); err != nil {
		add("%v", err)
	} else {
		q.accel, q.accelReason = accel, reason
		if q.Accelerator == hostcap.AccelKVM && hostcap.KVM().Unproven {
			warns = append(warns, fmt.Sprintf(`accelerator = "kvm": %s`, reason))
		}
	}
	if q.CPUs == 0 {
		q.CPUs = 1
	}
	if q.Memory == 0 {
		q.Memory = 1024
	}
	if q.CPUs < 0 || q.Memory < 0 {
		add("cpus and memory must be positive")
	}
	q.binaryGiven, q.firmwareGiven = q.QemuBinary != "", q.Firmware != ""
	q.codeGiven, q.varsGiven = q.OVMFCode != "", q.OVMFVars != ""
	if q.QemuBinary == "" {
		q.QemuBinary = qemu.DefaultBinary("")
	}
	for i, a := range q.QemuArgs {
		if len(a) == 0 {
			add("qemuargs[%d] is empty", i)
		}
	}
	if _, err := qemu.UserNetdev(q.QemuArgs); err != nil {
		add("qemuargs: %v", err)
	}
	switch q.Firmware {
	case "":
		q.Firmware = qemu.FirmwareBIOS
	case qemu.FirmwareBIOS:
	case qemu.FirmwareUEFI:
		// The default files follow the image's architecture (OVMF or
		// AAVMF): qemuTarget checks those once it is known.
		for _, f := range []string{q.OVMFCode, q.OVMFVars} {
			if _, err := os.Stat(f); f != "" && err != nil {
				add("firmware uefi: %v (set ovmf_code and ovmf_vars to the firmware's files)", err)
			}
		}
	default:
		add("firmware %q is not supported; use bios or uefi", q.Firmware)
	}
	if q.BootKernel == KernelFromImage && q.BootInitrd == "" {
		q.BootInitrd = KernelFromImage
	}
	if q.BootKernel == "" && (q.BootInitrd != "" || q.BootCmdline != "") {
		add("boot_initrd and boot_cmdline need boot_kernel (a host path, or %q for the image's own)", KernelFromImage)
	}
	for _, f := range []struct{ name, path string }{{"boot_kernel", q.BootKernel}, {"boot_initrd", q.BootInitrd}} {
		if f.path == "" || f.path == KernelFromImage {
			continue
		}
		if !filepath.IsAbs(f.path) {
			if abs, err := filepath.Abs(f.path); err == nil {
				f.path = abs
			}
		}
		if fi, err := os.Stat(f.path); err != nil {
			add("%s: %v", f.name, err)
		} else if !fi.Mode().IsRegular() {
			add("%s: %s is not a regular file", f.name, f.path)
		}
	}
	if q.ShutdownTimeout == 0 {
		q.ShutdownTimeout = 5 * time.Minute
	}
	if q.ShutdownTimeout < 0 {
		add("shutdown_timeout must be positive")
	}
	if q.BootStallTimeout == 0 {
		q.BootStallTimeout = 5 * time.Minute
	}
	if q.BootStallTimeout < 0 {
		add("boot_stall_timeout %s must be positive (or unset for the default 5m)", q.BootStallTimeout)
	}

	// The SDK's SSH communicator, reaching the forwarded port on loopback.
	if c.Comm.Type == "" {
		c.Comm.Type = "ssh"
	}
	if c.Comm.Type != "ssh" {
		add("communicator %q: the qemu strategy reaches the guest over ssh", c.Comm.Type)
	}
	if c.Comm.SSHUsername == "" {
		c.Comm.SSHUsername = "root"
	}
	if c.Comm.SSHHost == "" {
		c.Comm.SSHHost = "127.0.0.1"
	}
	if c.Comm.SSHHost != "127.0.0.1" {
		add("ssh_host %q: the qemu strategy forwards SSH on 127.0.0.1 only", c.Comm.SSHHost)
	}
	if c.Comm.SSHTimeout == 0 {
		c.Comm.SSHTimeout = 10 * time.Minute // a boot under TCG is slow
	}
	if errs := c.Comm.Prepare(&c.ctx); len(errs) > 0 {
		for _, e := range errs {
			add("%v", e)
		}
	}
	return warns
}

// qemuTarget chooses the machine for an image whose binaries are of a
// ("" when not known: the host's): each option the user set is kept,
// the others follow the image (qemu.ChooseTarget). Errors name the option
// or the package to install.
func (c *Config) qemuTarget(a arch.Arch) (qemuTarget, error) {
	q := &c.QemuConfig
	switch a {
	case "", arch.Host(), arch.I386, arch.ARM64:
	default:
		return qemuTarget{}, fmt.Errorf("the image's binaries are %s: the qemu strategy boots amd64 and arm64 images; use the chroot strategy (qemu-user) for it", a)
	}
	choice := qemu.TargetChoice{Accelerator: q.Accelerator}
	if q.binaryGiven {
		choice.Binary = q.QemuBinary
	}
	if q.firmwareGiven {
		choice.Firmware = q.Firmware
	}
	if q.codeGiven {
		choice.Code = q.OVMFCode
	}
	if q.varsGiven {
		choice.Vars = q.OVMFVars
	}
	return qemu.ChooseTarget(a, choice)
}
