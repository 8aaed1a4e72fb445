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

// TestCgroupEntryValidate: a journal entry names a sandbox's cgroup, or
// the reaper refuses it.
func TestCgroupEntryValidate(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/sys/fs/cgroup/" + CgroupPrefix + "12-1", true},
		{"/sys/fs/cgroup/unified/user.slice/" + CgroupPrefix + "12-2", true},
		{"/sys/fs/cgroup", false},
		{"/sys/fs/cgroup/user.slice", false},
		{CgroupPrefix + "12-1", false}, // relative
	} {
		e := Entry{Kind: KindCgroup, Path: tc.path}
		if err := e.validate(); (err == nil) != tc.ok {
			t.Errorf("validate(cgroup %s): %v, want ok %v", tc.path, err, tc.ok)
		}
	}
}
