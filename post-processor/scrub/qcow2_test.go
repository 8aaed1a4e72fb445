package scrub

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestScrubQCOW2InPlace: a qcow2 is scrubbed through its FUSE raw view:
// the same file (inode) is changed, not replaced by a conversion, and it
// grows by no more than the clusters the scrub wrote.
func TestScrubQCOW2InPlace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mounts, FUSE")
	}
	if _, err := exec.LookPath("qemu-storage-daemon"); err != nil {
		t.Skip("needs qemu-storage-daemon")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) {
		os.WriteFile(filepath.Join(dir, "etc/machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o444)
	}})
	img := fixture.QCOW2(t, disk.Path)
	var st0 syscall.Stat_t
	if err := syscall.Stat(img, &st0); err != nil {
		t.Fatal(err)
	}
	before := fixture.LeakSnapshot()
	var p PostProcessor
	if err := p.Configure(map[string]interface{}{}); err != nil {
		t.Fatal(err)
	}
	tui := packersdk.TestUi(t)
	art, keep, force, err := p.PostProcess(context.Background(), tui, &packersdk.MockArtifact{FilesValue: []string{img}})
	if err != nil {
		t.Fatal(err)
	}
	if !keep || !force || art.Files()[0] != img {
		t.Errorf("artifact %v keep %v force %v: want the input's file, kept", art.Files(), keep, force)
	}
	var st1 syscall.Stat_t
	if err := syscall.Stat(img, &st1); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st0.Ino {
		t.Error("the qcow2 was replaced, not changed in place")
	}
	if grown := (st1.Blocks - st0.Blocks) * 512; grown > 8<<20 {
		t.Errorf("the qcow2 grew by %d bytes", grown)
	}
	raw := filepath.Join(t.TempDir(), "back.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", img, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if got := string(fixture.ReadFileFromPartition(t, raw, disk.Root(), "/etc/machine-id")); got != "uninitialized\n" {
		t.Errorf("machine-id %q after the scrub", got)
	}
	fixture.FsckPartition(t, raw, disk.Root())
	if entries, _ := os.ReadDir(filepath.Dir(img)); len(entries) != 2 { // the image and its report
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("beside the image: %s", strings.Join(names, ", "))
	}
	before.AssertNoLeaksIn(t, filepath.Dir(img))
}
