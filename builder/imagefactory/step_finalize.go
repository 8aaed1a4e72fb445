package imagefactory

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// stepFinalize gives the working disk its final name, converting it first
// when format asks for qcow2. The conversion writes a temporary name, so a
// failed or cancelled build never leaves a half-written image behind; a
// reproducible build converts as the sparsify post-processor does (the
// same input, the same bytes).
type stepFinalize struct{}

func (s *stepFinalize) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	ui := uiOf(state)
	work := state.Get(stateDiskPath).(string)
	final := cfg.finalPath()
	if fi, err := os.Stat(work); err == nil {
		state.Put(stateVirtualSize, fi.Size())
	}

	w, _ := state.Get(stateWorkOverlay).(*workOverlay)
	switch {
	case w != nil:
		// The writes are in the overlay already: it only needs its name.
		if err := w.finish(final); err != nil {
			return haltf(state, "use_backing_file: %v", err)
		}
		ui.Say(fmt.Sprintf("The overlay on %s holds this build's changes", state.Get(stateBaseImagePath)))
	case cfg.UseBackingFile:
		base, _ := filepath.Abs(cfg.BaseImage)
		baseFmt := state.Get(stateBaseFormat).(diskimage.Format)
		ui.Say(fmt.Sprintf("Writing the changes as a qcow2 overlay on %s...", base))
		start := time.Now()
		if err := diskimage.Overlay(ctx, work, base, baseFmt, final); err != nil {
			return haltf(state, "use_backing_file: %v", err)
		}
		ui.Say(doneLine("Overlay written: "+final, time.Since(start), fileSize(final)))
		os.Remove(work)
	case cfg.Format == "raw":
		if err := os.Rename(work, final); err != nil {
			return haltf(state, "naming the image %s: %v", final, err)
		}
		// A rename: a size, no time.
		ui.Say("Image " + final + ": " + fileSize(final))
	default:
		ui.Say(fmt.Sprintf("Converting the image to %s...", cfg.Format))
		start := time.Now()
		bar := packerglue.NewPercentBar(ui, "conversion to "+cfg.Format)
		err := diskimage.Convert(ctx, work, diskimage.Raw, final, diskimage.Format(cfg.Format),
			diskimage.ConvertOptions{Progress: bar.SetPercent, Repro: cfg.repro, Compat: cfg.QCOW2Compat})
		bar.Close()
		if err != nil {
			return haltf(state, "converting the image to %s: %v", cfg.Format, err)
		}
		ui.Say(doneLine(fmt.Sprintf("Converted to %s: %s", cfg.Format, final), time.Since(start), fileSize(final)))
		os.Remove(work)
	}
	state.Put(stateArtifactPath, final)
	return multistep.ActionContinue
}

func (s *stepFinalize) Cleanup(multistep.StateBag) {}
