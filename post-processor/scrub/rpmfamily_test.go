package scrub

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestScrubRPMFamilyDisk: the post-processor, with its defaults, on a raw
// disk whose ext4 root holds the Rocky 9 tree (a real rpm database): each
// piece of family state is gone, named in the report beside the image,
// and rpm still lists and verifies the package on the mounted result.
func TestScrubRPMFamilyDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) { fixture.RPMFamilyFiles(t, dir) }})
	before := fixture.LeakSnapshot()
	var p PostProcessor
	if err := p.Configure(map[string]interface{}{}); err != nil {
		t.Fatal(err)
	}
	art, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{disk.Path}})
	if err != nil {
		t.Fatalf("scrub: %v", err)
	}
	report, err := os.ReadFile(art.(*Artifact).Report)
	if err != nil {
		t.Fatalf("no scrub report: %v", err)
	}
	before.AssertNoLeaksIn(t, filepath.Dir(disk.Path))
	fixture.FsckPartition(t, disk.Path, disk.Root())
	// Read-write: rpm recreates its lock and WAL index, as on a booted clone.
	fixture.WithReadWriteMount(t, disk.Path, disk.Root(), func(dir string) {
		fixture.AssertRPMFamilyScrubbed(t, dir, report)
	})
}
