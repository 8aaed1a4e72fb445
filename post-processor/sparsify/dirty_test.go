package sparsify

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

// TestDirtyInputUntouched: data written and deleted in the input is gone
// from every output, the input file is not changed (the trim goes through
// an overlay), and the files are the same to the byte.
func TestDirtyInputUntouched(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	for _, tt := range []struct {
		name, input, format string
		extra               map[string]interface{}
	}{
		{"raw to qcow2 zstd", "raw", "qcow2", map[string]interface{}{"compression": "zstd"}},
		{"qcow2 to raw elsewhere", "qcow2", "raw", nil},
		{"raw to vmdk, shrunk", "raw", "vmdk", map[string]interface{}{"shrink": true, "free_space": "4M"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
			root := disk.Root()
			fixture.DirtyPartition(t, disk.Path, root, 100<<20)
			clean := fixture.Manifest(t, disk.Path, root)
			input := disk.Path
			if tt.input == "qcow2" {
				input = fixture.QCOW2(t, disk.Path)
			}
			sum := fixture.Sha256(t, input)
			before := fixture.LeakSnapshot()
			out := filepath.Join(t.TempDir(), "out."+tt.format)
			cfg := map[string]interface{}{"format": tt.format, "output": out}
			for k, v := range tt.extra {
				cfg[k] = v
			}
			var p PostProcessor
			if err := p.Configure(cfg); err != nil {
				t.Fatal(err)
			}
			ui := packersdk.TestUi(t)
			if _, _, _, err := p.PostProcess(context.Background(), ui, &packersdk.MockArtifact{FilesValue: []string{input}}); err != nil {
				t.Fatal(err)
			}
			if fixture.Sha256(t, input) != sum {
				t.Error("the input changed")
			}
			raw := out
			if tt.format != "raw" {
				raw = filepath.Join(t.TempDir(), "back.raw")
				if b, err := exec.Command("qemu-img", "convert", "-O", "raw", out, raw).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img convert: %v\n%s", err, b)
				}
			}
			var st syscall.Stat_t
			syscall.Stat(raw, &st)
			// The fixture holds a few MiB; the 100 MiB deleted are gone.
			if got := st.Blocks * 512; got > 24<<20 {
				t.Errorf("%d bytes allocated in the output; 100 MiB were deleted, a few MiB live", got)
			}
			if tt.extra["shrink"] == true {
				root.Size = fixture.FileSize(t, raw) - root.Offset
			}
			if diff := fixture.ManifestDiff(clean, fixture.Manifest(t, raw, root), 20); len(diff) > 0 {
				t.Errorf("the files changed:\n%s", strings.Join(diff, "\n"))
			}
			fixture.FsckPartition(t, raw, root)
			before.AssertNoLeaksIn(t, filepath.Dir(out), filepath.Dir(input))
			if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 2 { // output and .sha256
				t.Errorf("beside the output: %v", entries)
			}
		})
	}
}
