package imagefactory

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// stepQemuShutdown powers the guest off once provisioning is over: with
// shutdown_command over SSH, else the ACPI power button through QMP, then
// ctrl-alt-delete if the guest does not react. A
// guest still running after shutdown_timeout is quit by force, with a
// warning (its filesystem journal is replayed when the disk is mounted
// next).
type stepQemuShutdown struct{}

// acpiGrace is how long a guest may ignore the ACPI power button before
// ctrl-alt-delete is sent (a guest that heard it is shutting down by then,
// and the chord only turns its power-off into a reboot, which ends QEMU
// the same way).
const acpiGrace = 20 * time.Second

func (s *stepQemuShutdown) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	ui := uiOf(state)
	m := machineOf(state)
	start := time.Now()
	if cfg.ShutdownCommand != "" {
		ui.Say(fmt.Sprintf("Shutting the guest down: %s", cfg.ShutdownCommand))
		comm := state.Get("communicator").(packersdk.Communicator)
		var out bytes.Buffer
		cmd := &packersdk.RemoteCmd{Command: cfg.ShutdownCommand, Stdout: &out, Stderr: &out}
		// The connection may drop as the guest goes down: not an error.
		if err := comm.Start(ctx, cmd); err != nil {
			return haltf(state, "shutdown_command %q: %v", cfg.ShutdownCommand, err)
		}
	} else {
		ui.Say("Shutting the guest down (ACPI power button)...")
		if err := m.Powerdown(); err != nil {
			return haltf(state, "pressing the power button through QMP: %v", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.ShutdownTimeout)
	defer cancel()
	if cfg.ShutdownCommand == "" {
		// Images without D-Bus have no logind, and nothing hears the
		// power button: ctrl-alt-delete reaches systemd itself.
		grace, gcancel := context.WithTimeout(wctx, min(acpiGrace, cfg.ShutdownTimeout/2))
		err := m.Wait(grace)
		gcancel()
		if err != nil && wctx.Err() == nil {
			ui.Say(fmt.Sprintf("The guest ignored the power button for %s; sending ctrl-alt-delete", min(acpiGrace, cfg.ShutdownTimeout/2)))
			if err := m.CtrlAltDelete(); err != nil {
				ui.Error(fmt.Sprintf("Warning: sending ctrl-alt-delete through QMP: %v", err))
			}
		}
	}
	if err := m.Wait(wctx); err != nil {
		if ctx.Err() != nil {
			return halt(state, ctx.Err())
		}
		ui.Error(fmt.Sprintf("Warning: the guest did not power off within shutdown_timeout (%s); quitting QEMU by force", cfg.ShutdownTimeout))
		if err := m.Quit(); err != nil {
			return haltf(state, "quitting QEMU: %v", err)
		}
		return multistep.ActionContinue
	}
	if err := m.Kill(); err != nil { // releases the journal entry of the exited process
		return haltf(state, "QEMU: %v", err)
	}
	ui.Say(fmt.Sprintf("The guest powered off in %s", diskimage.FormatDuration(time.Since(start))))
	return multistep.ActionContinue
}

func (s *stepQemuShutdown) Cleanup(multistep.StateBag) {}
