package imagefactory

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// stepQemuMark keeps the guest's clock when date answers, and warns and
// goes on without one when it does not.
func TestStepQemuMark(t *testing.T) {
	for _, tc := range []struct {
		name, stdout, stderr string
		status               int
		want                 time.Time // zero: no mark
		says                 string
	}{
		{"GNU date", "1767225600.25\n1767225600\n", "", 0, time.Unix(1767225600, 250000000),
			"Guest clock when SSH answered: 2026-01-01T00:00:00.25Z (what provisioners change in the network configuration after it is kept)"},
		{"busybox date", "1767225600.%N\n1767225600\n", "", 0, time.Unix(1767225601, 0), "Guest clock when SSH answered: 2026-01-01T00:00:01Z"},
		{"no date", "", "sh: date: not found\nsh: date: not found\n", 127, time.Time{},
			"Warning: reading the guest's clock when SSH answered: \"\" is not the guest's clock in seconds since the epoch " +
				"(from \"date +%s.%N; date +%s\"); exit status 127, sh: date: not found / sh: date: not found; after the shutdown " +
				"the image's network configuration goes back as it was before the boot, provisioners' changes to it included"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			state := new(multistep.BasicStateBag)
			state.Put("ui", &packersdk.BasicUi{Writer: &out, ErrorWriter: &errOut})
			comm := &packersdk.MockCommunicator{StartStdout: tc.stdout, StartStderr: tc.stderr, StartExitStatus: tc.status}
			state.Put("communicator", comm)
			if a := (&stepQemuMark{}).Run(context.Background(), state); a != multistep.ActionContinue {
				t.Fatalf("Run = %v", a)
			}
			if comm.StartCmd.Command != "date +%s.%N; date +%s" {
				t.Errorf("ran %q", comm.StartCmd.Command)
			}
			mark, ok := state.GetOk(stateGuestMark)
			if tc.want.IsZero() && ok || !tc.want.IsZero() && (!ok || !mark.(time.Time).Equal(tc.want)) {
				t.Errorf("mark = %v (%v), want %v", mark, ok, tc.want)
			}
			if said := out.String() + errOut.String(); !strings.Contains(said, tc.says) {
				t.Errorf("the step says %q, want %q", said, tc.says)
			}
		})
	}
}
