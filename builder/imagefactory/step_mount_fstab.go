package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepMountFstab mounts, beneath the root, the image's own /etc/fstab
// entries that live on its other partitions (/boot, /var, ...). What the
// kernel cannot mount is reported and skipped unless required_mounts
// lists it; one of the image's own filesystems the kernel cannot mount
// gets a read-only placeholder, so that writes there fail.
type stepMountFstab struct{}

func (s *stepMountFstab) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	sess := sessionOf(state)
	mounted, skipped, err := sess.MountFstab()
	if err != nil {
		return halt(state, err)
	}
	ui := uiOf(state)
	for _, m := range mounted {
		ui.Say(fmt.Sprintf("Mounted %s from the image's fstab", m))
	}
	for _, sk := range skipped {
		msg := fmt.Sprintf("Skipped %s from the image's fstab: %s", sk.Entry.File, sk.Reason)
		if sk.Placeholder {
			msg += fmt.Sprintf("; an empty read-only placeholder stands there, so writes below %s will fail "+
				"(Read-only file system) rather than land in the filesystem beneath it; list it in required_mounts to stop the build instead", sk.Entry.File)
		}
		ui.Say(msg)
	}
	return multistep.ActionContinue
}

func (s *stepMountFstab) Cleanup(multistep.StateBag) {}
