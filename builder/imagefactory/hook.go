package imagefactory

import (
	"context"
	"fmt"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// recoveringHook turns a panic while provisioning into the build's error.
// The SDK runs the hook on a goroutine of its own, where a panic would end
// the plugin without running any step's cleanup (the next build would reap
// the journal, but this build can release everything itself).
type recoveringHook struct {
	packersdk.Hook
}

func (h recoveringHook) Run(ctx context.Context, name string, ui packersdk.Ui, comm packersdk.Communicator, data interface{}) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s panicked (every loop device and mount the build held is released): %v", name, r)
		}
	}()
	return h.Hook.Run(ctx, name, ui, comm, data)
}
