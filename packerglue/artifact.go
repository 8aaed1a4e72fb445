package packerglue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
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

// Stamp is what an artifact's file was when the artifact was made: its
// device, inode and change time. A later post-processor that rewrites the
// file in place (sparsify's qcow2 to qcow2 renames a new file over it;
// scrub and a raw sparsify write into it) changes one of them.
type Stamp struct {
	dev, ino uint64
	ctime    unix.Timespec
	ok       bool
}

// StampOf is path's Stamp now; the zero Stamp (never "changed") when path
// cannot be read.
func StampOf(path string) Stamp {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Stamp{}
	}
	return Stamp{dev: st.Dev, ino: st.Ino, ctime: st.Ctim, ok: true}
}

// ArtifactLineSince is ArtifactLine for an artifact whose file was made as
// made: when a later post-processor has rewritten the file in place, the
// line says so without the path, which that post-processor's own artifact
// line names: Packer lists both (the in-place post-processor keeps its
// input), and the same path twice read as two outputs.
func ArtifactLineSince(what, path, detail string, made Stamp) string {
	if now := StampOf(path); made.ok && now.ok && now != made {
		return what + ": rewritten in place by a later post-processor, whose artifact below names the file"
	}
	return ArtifactLine(what, path, detail)
}
