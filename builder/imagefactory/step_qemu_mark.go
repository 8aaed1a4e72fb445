package imagefactory

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// stepQemuMark reads the guest's clock once SSH answers, before any
// provisioner runs. After the shutdown, the offline cleanup keeps what
// changed in the image's network configuration after this mark (a
// provisioner's work) and undoes what changed before it (the boot's).
// The guest's kernel stamps inode change times with this same clock, so
// the comparison holds whatever the host's clock says; the boot's own
// writes (cloud-init's network configuration for the factory's NIC, udev's
// persistent-net rules, a DHCP client's resolv.conf) are done before sshd
// answers. Without a mark the cleanup undoes provisioners' changes there
// too, with a warning.
type stepQemuMark struct{}

// guestClockTimeout bounds the one command; date answers at once.
const guestClockTimeout = time.Minute

func (s *stepQemuMark) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	ui := uiOf(state)
	mark, err := readGuestClock(ctx, state.Get("communicator").(packersdk.Communicator))
	if err != nil {
		ui.Error(fmt.Sprintf("Warning: reading the guest's clock when SSH answered: %v; after the shutdown the image's "+
			"network configuration goes back as it was before the boot, provisioners' changes to it included", err))
		return multistep.ActionContinue
	}
	state.Put(stateGuestMark, mark)
	ui.Say(fmt.Sprintf("Guest clock when SSH answered: %s (what provisioners change in the network configuration after it is kept)",
		mark.UTC().Format(time.RFC3339Nano)))
	return multistep.ActionContinue
}

// readGuestClock runs qemu.GuestClockCommand as the SSH user.
func readGuestClock(ctx context.Context, comm packersdk.Communicator) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, guestClockTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := &packersdk.RemoteCmd{Command: qemu.GuestClockCommand, Stdout: &out, Stderr: &errOut}
	if err := comm.Start(ctx, cmd); err != nil {
		return time.Time{}, err
	}
	exited := make(chan int, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-ctx.Done():
		return time.Time{}, fmt.Errorf("%q did not answer within %s", qemu.GuestClockCommand, guestClockTimeout)
	case status := <-exited:
		mark, err := qemu.ParseGuestClock(out.String())
		if err != nil && (status != 0 || errOut.Len() > 0) {
			err = fmt.Errorf("%w; exit status %d, %s", err, status, strings.ReplaceAll(strings.TrimSpace(errOut.String()), "\n", " / "))
		}
		return mark, err
	}
}

func (s *stepQemuMark) Cleanup(multistep.StateBag) {}
