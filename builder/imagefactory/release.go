package imagefactory

import "github.com/hashicorp/packer-plugin-sdk/multistep"

// releaser is a step that holds something in or on the image (a mount, a
// swapped file, a loop device) and can give it back before the build ends:
// stepRelease calls them in reverse order so the disk is whole and detached
// before it is converted and renamed. Their Cleanup calls release too, for
// builds that never reach stepRelease; release must be idempotent.
type releaser interface {
	multistep.Step
	release(state multistep.StateBag) error
}
