package session

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestMountPathInUse: two builds given one mount_path (a template with a
// fixed path, run twice at once) must not stack their roots on one
// directory, where each build's provisioners would run in the other's
// image. The second is refused, naming the path, whether it comes after
// the first mounted (sequential) or at the same moment (racing); the
// first keeps its image there.
func TestMountPathInUse(t *testing.T) {
	for _, racing := range []bool{false, true} {
		t.Run(map[bool]string{false: "sequential", true: "racing"}[racing], func(t *testing.T) {
			d1, d2 := fixture.NewDisk(t, fixture.DiskOptions{}), fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt"})
			e1, e2 := newEnv(t, d1.Path), newEnv(t, d2.Path)
			e2.opts.MountPath = e1.opts.MountPath
			s1, s2 := e1.attach(t), e2.attach(t)
			for _, s := range []*Session{s1, s2} {
				if _, err := s.FindRoot(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			var err1, err2 error
			if racing {
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); err1 = s1.MountRoot() }()
				go func() { defer wg.Done(); err2 = s2.MountRoot() }()
				wg.Wait()
				if err1 != nil && err2 == nil {
					// The winner is s1 from here.
					s1, s2, err1, err2, d1, d2 = s2, s1, err2, err1, d2, d1
				}
			} else {
				err1 = s1.MountRoot()
				err2 = s2.MountRoot()
			}
			if err1 != nil {
				t.Fatalf("the first MountRoot: %v", err1)
			}
			if err2 == nil {
				t.Fatalf("two sessions mounted their roots on %s", e1.opts.MountPath)
			}
			if !strings.Contains(err2.Error(), e1.opts.MountPath) || !strings.Contains(err2.Error(), "in use") {
				t.Errorf("the refusal does not name the mount path in use: %v", err2)
			}
			marker := filepath.Join(e1.opts.MountPath, "etc", "first-session")
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := s1.Unmount(); err != nil {
				t.Fatal(err)
			}
			if !fixture.FileExistsOnDisk(t, d1.Path, d1.Root().Offset, "/etc/first-session") {
				t.Error("a file written at the mount path did not land on the first session's disk")
			}
			// Free again: the second may mount now, and sees its own disk.
			if err := s2.MountRoot(); err != nil {
				t.Fatalf("MountRoot once the path is free: %v", err)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the second session's root shows the first one's file")
			}
		})
	}
}
