package imagefactory

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootstrap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// stepBootstrap makes the root tree with debootstrap, or finds it in the
// cache, when the template has a bootstrap block.
type stepBootstrap struct{}

func (s *stepBootstrap) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	b := cfg.Bootstrap
	if b == nil {
		return multistep.ActionContinue
	}
	ui := uiOf(state)
	o := bootstrap.Options{
		Tool: b.Tool, Suite: b.Suite, Variant: b.Variant, Include: b.Include, Arch: arch.Arch(b.Arch),
		CacheDir: b.CacheDir, Journal: journalOf(state),
		Log: func(line string) {
			// debootstrap's I: lines are its progress; the rest is noise.
			if strings.HasPrefix(line, "I: ") || strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
				ui.Message(line)
			}
		},
	}
	ui.Say(fmt.Sprintf("Root tree: %s %s (variant %s, include %s%s), cached as %s",
		b.Tool, b.Suite, orDefault(b.Variant), orNone(b.Include), map[bool]string{true: ", arch " + b.Arch}[o.Foreign()], o.Path()))
	start := time.Now()
	tree, cached, err := bootstrap.Tree(ctx, o)
	if err != nil {
		return haltf(state, "bootstrap: %v", err)
	}
	if cached {
		ui.Say("Root tree found in the cache")
	} else {
		ui.Say(fmt.Sprintf("Root tree made by %s in %s", b.Tool, diskimage.FormatDuration(time.Since(start))))
	}
	state.Put(stateRootTree, tree)
	return multistep.ActionContinue
}

func (s *stepBootstrap) Cleanup(multistep.StateBag) {}

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func orNone(v []string) string {
	if len(v) == 0 {
		return "none"
	}
	return strings.Join(v, ",")
}
