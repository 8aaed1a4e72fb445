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
// gets a read-only placeholder, so that writes there fail, unless it is a
// FAT filesystem staged in a tmpfs (fat_mounts): then its release, once
// the chroot's processes are stopped and before the unmount, writes what
// changed back to the partition. A build that fails never writes it back.
type stepMountFstab struct {
	done bool
}

func (s *stepMountFstab) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	sess := sessionOf(state)
	s.done = true
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

// release writes the staged FAT filesystems back (stepRelease only: a
// build that failed or was cancelled leaves them as they were).
func (s *stepMountFstab) release(state multistep.StateBag) error {
	if !s.done {
		return nil
	}
	s.done = false
	lines, err := sessionOf(state).WriteBackFAT(context.Background())
	for _, l := range lines {
		uiOf(state).Say("Wrote back " + l)
	}
	return err
}

func (s *stepMountFstab) Cleanup(multistep.StateBag) {}
