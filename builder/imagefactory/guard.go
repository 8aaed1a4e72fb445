package imagefactory

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// guarded turns a panic in a step into an ordinary halt with the panic as
// the build's error, so every cleanup runs knowing the build failed (the
// output directory is removed, the working disk too); a panic in one
// cleanup is reported and the cleanups after it still run.
type guarded struct {
	step multistep.Step
}

// newGuardedRunner is commonsteps.NewRunner (-debug, -on-error) with every
// step guarded outside the SDK's -on-error wrappers, so that these still
// see the real step: Packer's "skipping cleanup of step" names it, and
// -on-error=run-cleanup-provisioner finds StepProvision.
func newGuardedRunner(steps []multistep.Step, cfg common.PackerConfig, ui packersdk.Ui) multistep.Runner {
	// NewRunner wraps the slice's elements in place.
	r := commonsteps.NewRunner(append([]multistep.Step(nil), steps...), cfg, ui)
	switch r := r.(type) {
	case *multistep.BasicRunner:
		r.Steps = guard(r.Steps)
		return r
	case *multistep.DebugRunner:
		r.Steps = guard(r.Steps)
		return r
	}
	// A runner of a newer SDK: guarded inside its wrappers, as before.
	return commonsteps.NewRunner(guard(steps), cfg, ui)
}

func guard(steps []multistep.Step) []multistep.Step {
	out := make([]multistep.Step, len(steps))
	for i, s := range steps {
		out[i] = guarded{s}
	}
	return out
}

func (g guarded) Run(ctx context.Context, state multistep.StateBag) (action multistep.StepAction) {
	defer func() {
		if r := recover(); r != nil {
			action = haltf(state, "step %T panicked (every loop device and mount the build held is released): %v", g.step, r)
		}
	}()
	return g.step.Run(ctx, state)
}

func (g guarded) Cleanup(state multistep.StateBag) {
	defer func() {
		if r := recover(); r != nil {
			uiOf(state).Error(fmt.Sprintf("cleanup of step %T panicked: %v", g.step, r))
		}
	}()
	g.step.Cleanup(state)
}
