package boottest

import (
	"path/filepath"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// Tested is the artifact the boot test passes on: the input itself (same
// files, ID, state and Destroy), named for what happened to it. Packer
// lists both the input, which the boot test keeps, and what the last
// post-processor returns: returned unwrapped, the same line was printed
// twice at the end of the build.
type Tested struct {
	packersdk.Artifact
	Console string // the kept serial console
}

func (a *Tested) String() string {
	return "boot test passed (console " + filepath.Base(a.Console) + ") on the image above"
}
