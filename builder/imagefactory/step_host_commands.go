package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/chroot"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// hostCommandData is what pre_mount_commands, post_mount_commands and
// pre_unmount_commands may interpolate.
type hostCommandData struct {
	Device    string
	MountPath string
	DiskPath  string
}

// stepHostCommands runs one of the user's lists of host commands, each
// through command_wrapper.
type stepHostCommands struct {
	Name     string
	Commands []string
}

func (s *stepHostCommands) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	if len(s.Commands) == 0 {
		return multistep.ActionContinue
	}
	cfg := configOf(state)
	ictx := cfg.ctx
	data := &hostCommandData{MountPath: state.Get(stateMountPath).(string)}
	if d, ok := state.GetOk(stateDiskPath); ok {
		data.DiskPath = d.(string)
	}
	if _, ok := state.GetOk(stateSession); ok {
		data.Device = sessionOf(state).RootDevice()
	}
	ictx.Data = data
	uiOf(state).Say(fmt.Sprintf("Running %s...", s.Name))
	if err := chroot.RunLocalCommands(s.Commands, cfg.wrapper(), ictx, uiOf(state)); err != nil {
		return haltf(state, "%s: %v", s.Name, err)
	}
	return multistep.ActionContinue
}

func (s *stepHostCommands) Cleanup(multistep.StateBag) {}
