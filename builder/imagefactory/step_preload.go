package imagefactory

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// preloadPath is the dynamic loader's list of libraries loaded into every
// program (ld.so(8), FILES). Raspberry Pi OS ships one naming
// libarmmem-${PLATFORM}.so: in a chroot on another machine every command
// then prints a loader error, and a preloaded library that exits makes
// every command fail.
const preloadPath = "/etc/ld.so.preload"

// stepSetAsidePreload moves the image's /etc/ld.so.preload aside while
// commands run in the chroot and puts it back, the same file, afterwards
// (journaled: the reaper puts it back after a kill).
type stepSetAsidePreload struct {
	restore func() error
}

func (s *stepSetAsidePreload) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	sess := sessionOf(state)
	// Read before the move, for the message; a symlink is read inside the image.
	content, _ := sess.RootFS().ReadFile(preloadPath)
	restore, moved, err := sess.MoveAside(preloadPath)
	if err != nil {
		return halt(state, err)
	}
	s.restore = restore
	if moved {
		names := strings.Join(strings.Fields(strings.ReplaceAll(string(content), ":", " ")), " ")
		if len(names) > 200 {
			names = names[:200] + "..."
		}
		if names == "" {
			names = "nothing"
		}
		uiOf(state).Say(fmt.Sprintf("Moved the image's %s (it preloads %s) aside while commands run in the chroot; it is put back unchanged afterwards", preloadPath, names))
	}
	return multistep.ActionContinue
}

func (s *stepSetAsidePreload) release(state multistep.StateBag) error {
	if s.restore == nil {
		return nil
	}
	if err := s.restore(); err != nil {
		return fmt.Errorf("putting the image's %s back: %w", preloadPath, err)
	}
	s.restore = nil
	return nil
}

func (s *stepSetAsidePreload) Cleanup(state multistep.StateBag) {
	if err := s.release(state); err != nil {
		uiOf(state).Error(err.Error())
	}
}
