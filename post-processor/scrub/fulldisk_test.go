package scrub

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestScrubFullDisk: on an image whose root filesystem has no free block
// left, the operations that write get the room the removing ones freed;
// with nothing to free, one error says the filesystem is full and names
// the operations, and the filesystem stays consistent.
func TestScrubFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	tests := []struct {
		name        string
		withLog     bool   // a 1 MiB log that the logfiles operation removes
		wantErr     string // "" = success
		wantMachine string
	}{
		{"a log to remove makes room", true, "", "uninitialized\n"},
		{"nothing to remove", false, "the image's filesystem is full: hostname, machine-id, passwords could not write", "0123456789abcdef0123456789abcdef\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) {
				if tt.withLog {
					// Random: zeros would be holes, and free nothing when removed.
					junk := make([]byte, 1<<20)
					rand.Read(junk)
					os.MkdirAll(filepath.Join(dir, "var/log"), 0o755)
					os.WriteFile(filepath.Join(dir, "var/log/syslog"), junk, 0o644)
				}
				os.WriteFile(filepath.Join(dir, "etc/machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o444)
			}})
			fixture.FillPartition(t, disk.Path, disk.Root())
			before := fixture.LeakSnapshot()
			var p PostProcessor
			if err := p.Configure(map[string]interface{}{}); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{disk.Path}})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("scrub of a full disk: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
			}
			t.Log(err)
			if got := string(fixture.ReadFileFromPartition(t, disk.Path, disk.Root(), "/etc/machine-id")); got != tt.wantMachine {
				t.Errorf("machine-id %q, want %q", got, tt.wantMachine)
			}
			fixture.FsckPartition(t, disk.Path, disk.Root())
			before.AssertNoLeaksIn(t, filepath.Dir(disk.Path))
		})
	}
}
