package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/binfmt"
)

// stateArch is the image's arch.Arch.
const stateArch = "architecture"

// stepArchitecture reads the image's architecture from its own /bin/sh
// (stepCheckShell made sure there is one) and its dynamic loader, checks
// it against `architecture`, exposes it as generated data Architecture,
// and, for an image of another architecture than the host's, makes its
// binaries run in the chroot under qemu-user (binfmt.Enable) before
// anything runs there. Its release, after the last process in the chroot
// (the relabel's setfiles included), removes what Enable registered.
//
// offline (the qemu strategy, before the boot) only reads, checks and
// exposes the architecture, for the steps that choose the machine; an
// image whose /bin/sh cannot be read is then a warning unless
// `architecture` is set, as such images booted before.
type stepArchitecture struct {
	offline bool
	rel     func() error
}

func (s *stepArchitecture) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	a, err := arch.OfImage(sessionOf(state).RootFS())
	if err != nil && s.offline && cfg.Architecture == "" {
		uiOf(state).Say(fmt.Sprintf("Warning: %s: reading its architecture: %v", cfg.inputName(), err))
		return multistep.ActionContinue
	}
	if err != nil {
		return haltf(state, "%s: reading its architecture: %v", cfg.inputName(), err)
	}
	if cfg.Architecture != "" && arch.Arch(cfg.Architecture) != a {
		return haltf(state, "%s is %s (its %s is an ELF binary for %s), but architecture = %q: build from an image of %s, or set architecture = %q",
			cfg.inputName(), a, arch.Shell, a, cfg.Architecture, cfg.Architecture, a)
	}
	state.Put(stateArch, a)
	putGenerated(state, "Architecture", string(a))
	ui := uiOf(state)
	if s.offline {
		ui.Say(fmt.Sprintf("Image architecture: %s", a))
		return multistep.ActionContinue
	}
	if a.Native() {
		ui.Say(fmt.Sprintf("Image architecture: %s (native on this %s host)", a, arch.Host()))
		return multistep.ActionContinue
	}
	ui.Say(fmt.Sprintf("Image architecture: %s (this host is %s): running its binaries under qemu-%s", a, arch.Host(), a.QEMU()))
	rel, how, err := binfmt.Enable(journalOf(state), a)
	if err != nil {
		return haltf(state, "%s is %s, which this %s host cannot run in a chroot: %v", cfg.inputName(), a, arch.Host(), err)
	}
	s.rel = rel
	ui.Say("binfmt_misc: " + how)
	return multistep.ActionContinue
}

func (s *stepArchitecture) release(state multistep.StateBag) error {
	if s.rel == nil {
		return nil
	}
	rel := s.rel
	s.rel = nil
	if err := rel(); err != nil {
		return fmt.Errorf("binfmt_misc: %w", err)
	}
	return nil
}

func (s *stepArchitecture) Cleanup(state multistep.StateBag) {
	if err := s.release(state); err != nil {
		uiOf(state).Error(err.Error())
	}
}
