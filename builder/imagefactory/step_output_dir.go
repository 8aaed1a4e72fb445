package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/sys/unix"
)

// stepOutputDir is the SDK's commonsteps.StepOutputDir (refuse an
// existing output directory unless -force, remove it on failure or
// cancel) for several builds on one host: the directory is created by
// this build alone (mkdir, not mkdir -p: of two builds racing, one gets
// it) and flock'd for the build's life, so that -force never deletes the
// directory of a build running now (its working disk) and two builds
// never share one. It also records that the directory is this build's
// (stateOutputDirMade), so the reap of an aborted build (abort.go)
// removes it as this step's cleanup would have, and never a directory the
// build did not make.
type stepOutputDir struct {
	Force bool
	Path  string

	lock    *os.File // the directory, flock'd
	created bool
}

func (s *stepOutputDir) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	ui := uiOf(state)
	inUse := func() multistep.StepAction {
		return haltf(state, "output_directory %s is in use by a build running now; give each build that runs at the same time its own output_directory", s.Path)
	}
	if _, err := os.Stat(s.Path); err == nil {
		if !s.Force {
			return haltf(state, "Output directory exists: %s\n\nUse the force flag to delete it prior to building.", s.Path)
		}
		if held, err := flockNB(s.Path); err != nil {
			return haltf(state, "output_directory %s: %v", s.Path, err)
		} else if held == nil {
			return inUse()
		} else {
			// Removed under its lock: a build that comes meanwhile fails
			// to lock or to create it.
			ui.Say("Deleting previous output directory...")
			err := os.RemoveAll(s.Path)
			held.Close()
			if err != nil {
				return haltf(state, "deleting output_directory %s: %v", s.Path, err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return haltf(state, "creating output_directory %s: %v", s.Path, err)
	}
	if err := os.Mkdir(s.Path, 0o755); errors.Is(err, os.ErrExist) {
		return inUse() // another build made it just now
	} else if err != nil {
		return haltf(state, "creating output_directory %s: %v", s.Path, err)
	}
	s.created = true
	held, err := flockNB(s.Path)
	if err != nil || held == nil {
		return haltf(state, "locking output_directory %s: %v", s.Path, err)
	}
	s.lock = held
	state.Put(stateOutputDirMade, true)
	return multistep.ActionContinue
}

func (s *stepOutputDir) Cleanup(state multistep.StateBag) {
	defer func() {
		if s.lock != nil {
			s.lock.Close()
			s.lock = nil
		}
	}()
	if !s.created {
		return
	}
	_, cancelled := state.GetOk(multistep.StateCancelled)
	_, halted := state.GetOk(multistep.StateHalted)
	if !cancelled && !halted {
		return
	}
	uiOf(state).Say("Deleting output directory...")
	for i := 0; i < 5; i++ {
		err := os.RemoveAll(s.Path)
		if err == nil {
			return
		}
		log.Printf("Error removing output dir: %s", err)
		time.Sleep(2 * time.Second)
	}
}

// flockNB opens dir and takes an exclusive flock on it without waiting:
// the open directory, or nil when another process holds it.
func flockNB(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("flock %s: %w", dir, err)
	}
	return f, nil
}
