package imagefactory

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// changeLinesMax caps each kind of package change in the build output.
const changeLinesMax = 20

// stepSBOM reads, offline, the packages of the image's final state (after
// provisioning, the image still mounted) and writes the bill of materials
// beside the artifact, <artifact file name>.spdx.json, under a temporary
// name first; a failed or cancelled build removes it. It prints what
// changed against the base (stepSBOMBase) and, as warnings, the package
// databases it could not read.
type stepSBOM struct {
	path string // written by this build
}

func (s *stepSBOM) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	if !cfg.SBOM {
		return multistep.ActionContinue
	}
	ui := uiOf(state)
	start := time.Now()
	inv, err := sbom.Read(sessionOf(state).MountPath())
	if err != nil {
		return haltf(state, "reading the image's packages for its SBOM: %v (sbom = false builds without one)", err)
	}
	for _, l := range inv.Incomplete {
		ui.Error("Warning: the SBOM is incomplete: " + l)
	}
	src := cfg.repro // nil: not reproducible
	final := cfg.finalPath()
	data, err := inv.SPDX(filepath.Base(final), src)
	if err != nil {
		return haltf(state, "writing the SBOM: %v", err)
	}
	path := packerglue.SBOMName(final)
	s.path = path
	if err := packerglue.WriteFileAtomic(path, data, 0o644); err != nil {
		return haltf(state, "writing the SBOM %s: %v", path, err)
	}
	state.Put(stateSBOM, inv)
	state.Put(stateSBOMPath, path)
	ui.Say(doneLine("Wrote the SBOM "+path, time.Since(start), fmt.Sprintf("%s, %s, kernel %s, %d packages",
		diskimage.FormatSize(int64(len(data))), orElse(inv.OS.PrettyName, "no os-release"), orElse(strings.Join(inv.Kernels, ", "), "none"), len(inv.Packages))))
	if base, ok := state.Get(stateSBOMBase).(*sbom.Inventory); ok {
		c := sbom.Diff(base, inv)
		msg := fmt.Sprintf("Packages against the base: %d added, %d removed, %d upgraded", len(c.Added), len(c.Removed), len(c.Upgraded))
		if lines := packerglue.ChangeLines(c, changeLinesMax); len(lines) > 0 {
			msg += "\n" + strings.Join(lines, "\n")
		}
		ui.Say(msg)
	}
	return multistep.ActionContinue
}

// Cleanup removes the SBOM of a build that failed or was cancelled after
// it was written.
func (s *stepSBOM) Cleanup(state multistep.StateBag) {
	_, cancelled := state.GetOk(multistep.StateCancelled)
	_, halted := state.GetOk(multistep.StateHalted)
	if s.path == "" || (!cancelled && !halted) {
		return
	}
	if err := os.Remove(s.path); err != nil && !os.IsNotExist(err) {
		uiOf(state).Error(fmt.Sprintf("removing the SBOM %s: %v", s.path, err))
	}
}

func orElse(s, none string) string {
	if s == "" {
		return none
	}
	return s
}
