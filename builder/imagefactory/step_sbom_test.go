package imagefactory

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// TestStepSBOMCleanup: the SBOM a build wrote goes when the build fails
// or is cancelled after it, and stays when the build succeeds.
func TestStepSBOMCleanup(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string // "" = the build succeeded
		kept bool
	}{
		{"success", "", true},
		{"halted", multistep.StateHalted, false},
		{"cancelled", multistep.StateCancelled, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.raw.spdx.json")
			if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
			state := outputDirState(t)
			if tc.key != "" {
				state.Put(tc.key, true)
			}
			(&stepSBOM{path: path}).Cleanup(state)
			if _, err := os.Stat(path); (err == nil) != tc.kept {
				t.Errorf("SBOM kept: %v, want %v", err == nil, tc.kept)
			}
		})
	}
}
