package sparsify

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestQCOW2Compat: a qcow2 input of compat 0.10 (a builder's
// qcow2_compat = "0.10") stays 0.10 unless qcow2_compat says otherwise,
// and zstd, which 0.10 cannot hold, is refused naming the input rather
// than silently making an image its old QEMU cannot read. qemu-img info
// is the judge.
func TestQCOW2Compat(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	disk := fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt"})
	in := filepath.Join(t.TempDir(), "old.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10", disk.Path, in).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name    string
		cfg     map[string]interface{}
		want    string // compat of the output
		wantErr string
	}{
		{"kept from the input", map[string]interface{}{}, "0.10", ""},
		{"kept, zlib", map[string]interface{}{"compression": "zlib"}, "0.10", ""},
		{"asked for", map[string]interface{}{"compression": "zstd", "qcow2_compat": "1.1"}, "1.1", ""},
		{"zstd from a 0.10 input", map[string]interface{}{"compression": "zstd"}, "", "is a qcow2 of compat 0.10 (for QEMU before 1.1), which cannot hold zstd clusters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.qcow2")
			c := map[string]interface{}{"format": "qcow2", "output": out, "checksums": []string{}}
			for k, v := range tc.cfg {
				c[k] = v
			}
			var p PostProcessor
			if err := p.Configure(c); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{in}})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), in) {
					t.Fatalf("error %v, want one naming %s and containing %q", err, in, tc.wantErr)
				}
				if _, serr := os.Stat(out); !os.IsNotExist(serr) {
					t.Errorf("an output was written: %v", serr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fixture.QCOW2Compat(t, out); got != tc.want {
				t.Errorf("qemu-img info of the output: compat %q, want %s", got, tc.want)
			}
			if got, err := diskimage.QCOW2CompatOf(out); err != nil || got != tc.want {
				t.Errorf("QCOW2CompatOf = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
