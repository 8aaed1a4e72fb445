package imagefactory

import (
	"context"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// doneLine is the one line a long step ends with: "WHAT in 1.2s: SIZE", or
// "WHAT in 1.2s" without a size; seconds and IEC units always, as the
// example's summary prints them.
func doneLine(what string, took time.Duration, size string) string {
	line := what + " in " + diskimage.FormatDuration(took)
	if size != "" {
		line += ": " + size
	}
	return line
}

// fileSize is a file's size for a result line: "1.62 GiB (640 MiB
// allocated)", or "220 MiB" alone when all of it is allocated (a
// compressed qcow2); "" when it cannot be read.
func fileSize(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	return sizeLine(st.Size, st.Blocks*512)
}

// sizeLine writes an apparent and an allocated size, the allocation left
// out when it is not smaller (within 1 %, the file's metadata blocks).
func sizeLine(apparent, allocated int64) string {
	s := diskimage.FormatSize(apparent)
	if allocated < apparent-apparent/100 {
		s += " (" + diskimage.FormatSize(allocated) + " allocated)"
	}
	return s
}

// stepProvisionClock times the provisioners, which the SDK's StepProvision
// runs without a word at the end: one before it (start) notes the time,
// one after it ends provisioning with its result line. (StepProvision
// itself stays unwrapped: -on-error=run-cleanup-provisioner looks for it.)
type stepProvisionClock struct{ start bool }

func (s *stepProvisionClock) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	if s.start {
		state.Put(stateProvisionStart, time.Now())
	} else if t, ok := state.Get(stateProvisionStart).(time.Time); ok {
		uiOf(state).Say(doneLine("Provisioning done", time.Since(t), ""))
	}
	return multistep.ActionContinue
}

func (s *stepProvisionClock) Cleanup(multistep.StateBag) {}
