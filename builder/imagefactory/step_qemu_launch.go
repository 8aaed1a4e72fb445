package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// consoleTailLines is how much of the serial console a failure shows.
const consoleTailLines = 40

// stepQemuLaunch boots the working disk: virtio disk and network, SSH
// forwarded from a free port on 127.0.0.1, the serial console saved to
// console.log in the output directory, QMP on a unix socket. The process
// is journaled: a cancelled or failed build quits it, a killed build's
// QEMU is reaped by the next build.
type stepQemuLaunch struct {
	machine *qemu.Machine
}

func (s *stepQemuLaunch) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	ui := uiOf(state)
	dir := state.Get(stateQemuDir).(string)
	kernel := state.Get(stateKernel).([3]string)

	t := state.Get(stateQemuTarget).(qemuTarget)
	ui.Say(fmt.Sprintf("Accelerator: %s (%s)", t.Accel, t.AccelReason))
	cpu := state.Get(stateCPUModel).([2]string)
	ui.Say(fmt.Sprintf("CPU model: %s (%s)", cpu[0], cpu[1]))
	o := qemu.Options{
		Binary:      t.Binary,
		Arch:        t.Arch,
		Accelerator: t.Accel,
		CPUModel:    cpu[0],
		CPUs:        cfg.CPUs,
		MemoryMiB:   cfg.Memory,
		Firmware:    t.Firmware,
		Disk:        state.Get(stateDiskPath).(string),
		Seed:        state.Get(stateSeed).(string),
		Kernel:      kernel[0],
		Initrd:      kernel[1],
		Cmdline:     kernel[2],
		SSHPort:     0, // Start picks it, and again if another build takes it first
		MAC:         state.Get(stateGuest).(*qemu.GuestState).MAC,
		QMPSocket:   filepath.Join(dir, "qmp.sock"),
		ConsoleLog:  filepath.Join(cfg.OutputDirectory, "console.log"),
		Extra:       cfg.QemuArgs,
	}
	if t.Firmware == qemu.FirmwareUEFI {
		// The build's own copy: the firmware writes its boot entries there.
		o.OVMFCode = t.Code
		o.OVMFVars = filepath.Join(dir, filepath.Base(t.Vars))
		if _, err := diskimage.Copy(ctx, t.Vars, o.OVMFVars, nil); err != nil {
			return haltf(state, "copying the UEFI variables %s: %v", t.Vars, err)
		}
	}
	m, err := qemu.Start(ctx, o, journalOf(state))
	if err != nil {
		return haltf(state, "starting QEMU: %v", err)
	}
	s.machine = m
	state.Put(stateMachine, m)
	port := m.Opts.SSHPort
	state.Put(stateSSHPort, port)
	ui.Say(fmt.Sprintf("Booting the image under QEMU (%s, %s, %d CPU, %d MiB, %s%s); SSH on 127.0.0.1:%d, console in %s",
		filepath.Base(m.Args[0]), t.Accel, cfg.CPUs, cfg.Memory, t.Firmware, map[bool]string{true: ", direct kernel boot"}[kernel[0] != ""], port, o.ConsoleLog))
	return multistep.ActionContinue
}

// Cleanup quits a QEMU still running (a failure or a cancel before the
// shutdown step) and, on failure, shows the end of the serial console
// unless the build's error carries it already (stepQemuWaitSSH's).
func (s *stepQemuLaunch) Cleanup(state multistep.StateBag) {
	if s.machine == nil {
		return
	}
	ui := uiOf(state)
	failure, failed := state.GetOk("error")
	_, cancelled := state.GetOk(multistep.StateCancelled)
	if exited, _ := s.machine.Exited(); !exited {
		ui.Say("Stopping QEMU...")
	}
	if err := s.machine.Quit(); err != nil {
		ui.Error(fmt.Sprintf("stopping QEMU: %v", err))
	}
	// A watchdog's error (stepQemuWaitSSH) already carries QEMU's message
	// and the console's last lines.
	var shown *qemu.GuestError
	if err, ok := failure.(error); ok && errors.As(err, &shown) {
		failed = false
	}
	if failed || cancelled {
		if stderr := strings.TrimSpace(s.machine.Stderr()); stderr != "" {
			ui.Error("QEMU said: " + stderr)
		}
		if tail := qemu.Tail(s.machine.Opts.ConsoleLog, consoleTailLines); tail != "" {
			ui.Error(fmt.Sprintf("Last lines of the serial console (%s):\n%s", s.machine.Opts.ConsoleLog, tail))
		}
	}
	s.machine = nil
}

func machineOf(state multistep.StateBag) *qemu.Machine {
	return state.Get(stateMachine).(*qemu.Machine)
}
