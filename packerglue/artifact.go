package packerglue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ArtifactLine is an artifact's String(): "WHAT: PATH (DETAIL)" while PATH
// exists, else "WHAT: PATH, consumed by a later post-processor (no longer
// on disk)". Packer prints every artifact a post-processor kept
// (keep_input_artifact, or the keep a post-processor returns, which ours
// set when they edit the file in place) at the end of the build, after
// later post-processors may have converted and removed its file: the list
// must not show such a file as an output.
func ArtifactLine(what, path, detail string) string {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("%s: %s, consumed by a later post-processor (no longer on disk)", what, path)
	}
	if detail == "" {
		return fmt.Sprintf("%s: %s", what, path)
	}
	return fmt.Sprintf("%s: %s (%s)", what, path, detail)
}
