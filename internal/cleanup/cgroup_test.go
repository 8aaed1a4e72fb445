package cleanup

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRemoveCgroupRefuses: the reaper touches only the sandbox's cgroups.
func TestRemoveCgroupRefuses(t *testing.T) {
	for _, dir := range []string{"/sys/fs/cgroup", t.TempDir(), filepath.Join(t.TempDir(), CgroupPrefix+"x")} {
		os.MkdirAll(dir, 0o755)
		if _, err := RemoveCgroup(dir); err == nil {
			t.Errorf("RemoveCgroup(%s) did not refuse", dir)
		}
	}
}
