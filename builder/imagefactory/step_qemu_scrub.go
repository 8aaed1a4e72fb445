package imagefactory

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// stepQemuScrub takes out of the image, offline after the shutdown, what
// the factory boot left in it: the build's key (and the sshd drop-in),
// cloud-init's instance state, the SSH host keys, machine-id (to
// "uninitialized"), DHCP leases, the random seed; and it puts the image's
// network configuration, resolv.conf and cloud-init's generated files back
// as they were before the boot, the build's own network files taken out,
// but for what provisioners changed there after the mark stepQemuMark
// took.
type stepQemuScrub struct{}

func (s *stepQemuScrub) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	g := state.Get(stateGuest).(*qemu.GuestState)
	mark, _ := state.Get(stateGuestMark).(time.Time) // zero: everything goes back
	rep, err := g.Undo(ctx, sessionOf(state).RootFS(), mark)
	if err != nil {
		return haltf(state, "removing what the factory boot left in the image: %v", err)
	}
	if err := relabelOffline(ctx, state, rep.Changes); err != nil {
		return halt(state, err)
	}
	var paths, kept []string
	for _, c := range rep.Changes {
		if c.Action == qemu.Kept {
			kept = append(kept, fmt.Sprintf("%s: %s", c.Path, c.Op))
		} else {
			paths = append(paths, fmt.Sprintf("%s %s (%s)", c.Action, c.Path, c.Op))
		}
	}
	msg := "Nothing of the factory boot to remove"
	if len(paths) > 0 {
		msg = fmt.Sprintf("Removed what the factory boot left (%d):\n  %s", len(paths), strings.Join(paths, "\n  "))
	}
	uiOf(state).Say(msg)
	if len(kept) > 0 {
		sort.Strings(kept)
		uiOf(state).Say(fmt.Sprintf("Kept what provisioners did to the network configuration (%d):\n  %s", len(kept), strings.Join(kept, "\n  ")))
	}
	return multistep.ActionContinue
}

func (s *stepQemuScrub) Cleanup(multistep.StateBag) {}
