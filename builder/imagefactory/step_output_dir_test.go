package imagefactory

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

func outputDirState(t *testing.T) multistep.StateBag {
	state := new(multistep.BasicStateBag)
	state.Put("ui", packersdk.TestUi(t))
	return state
}

// Two builds with one output_directory at the same time (two sources of a
// template naming the same directory, or two jobs of one template with
// -force): the second must neither delete the running build's directory
// (its working disk!) nor share it, and when they create it at the same
// moment, only one may have it.
func TestStepOutputDirInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	first, s1 := &stepOutputDir{Path: dir}, outputDirState(t)
	if first.Run(context.Background(), s1) != multistep.ActionContinue {
		t.Fatalf("first build: %v", s1.Get("error"))
	}
	work := filepath.Join(dir, ".t.work.raw")
	if err := os.WriteFile(work, []byte("the first build's working disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		second, s2 := &stepOutputDir{Path: dir, Force: force}, outputDirState(t)
		if second.Run(context.Background(), s2) != multistep.ActionHalt {
			t.Errorf("force %v: a second build took the output directory of a running one", force)
		} else if err := s2.Get("error").(error).Error(); !strings.Contains(err, dir) {
			t.Errorf("force %v: the error does not name %s: %s", force, dir, err)
		} else if force && !strings.Contains(err, "in use") {
			t.Errorf("force %v: the error does not say the directory is in use: %s", force, err)
		}
		s2.Put(multistep.StateHalted, true)
		second.Cleanup(s2)
		if _, err := os.Stat(work); err != nil {
			t.Fatalf("force %v: the running build's working disk is gone: %v", force, err)
		}
	}
	// Halted, the first removes its directory, and the path is free again.
	s1.Put(multistep.StateHalted, true)
	first.Cleanup(s1)
	if _, err := os.Stat(dir); err == nil {
		t.Error("a halted build left its output directory")
	}

	// Racing to create it: one wins.
	dir = filepath.Join(t.TempDir(), "raced")
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &stepOutputDir{Path: dir}
			if s.Run(context.Background(), outputDirState(t)) == multistep.ActionContinue {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Errorf("%d builds created output directory %s at once, want 1", won, dir)
	}
}
