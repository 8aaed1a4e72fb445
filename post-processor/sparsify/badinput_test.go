package sparsify

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestBadInputs: each gives one clear error and leaves the input as it was,
// with no output under the final name.
func TestBadInputs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	cases := []struct {
		name   string
		disk   func(t *testing.T) string
		config map[string]interface{}
		want   string
	}{
		{"not-a-disk", func(t *testing.T) string { return fixture.NotADisk(t) }, nil, "is not a disk image"},
		{"qcow2-missing-backing-file", func(t *testing.T) string { return fixture.QCOW2MissingBacking(t) }, map[string]interface{}{"format": "qcow2"}, "base.qcow2"},
		{"read-only-in-place", func(t *testing.T) string {
			d := fixture.Disk(t, fixture.DiskOptions{})
			if err := os.Chmod(d, 0o444); err != nil {
				t.Fatal(err)
			}
			return d
		}, nil, "read-only"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := fixture.LeakSnapshot()
			disk := c.disk(t)
			sum := fixture.Sha256(t, disk)
			var p PostProcessor
			cfg := c.config
			if cfg == nil {
				cfg = map[string]interface{}{}
			}
			if err := p.Configure(cfg); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{disk}})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if fixture.Sha256(t, disk) != sum {
				t.Error("the input changed")
			}
			entries, _ := os.ReadDir(filepath.Dir(disk))
			for _, e := range entries {
				if name := e.Name(); strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".sha256") {
					t.Errorf("left behind: %s", name)
				}
			}
			before.AssertNoLeaksIn(t, filepath.Dir(disk))
		})
	}
}

// TestOutputOnFullFilesystem: the output's filesystem fills up: one error
// saying so, the input as it was, nothing left in the output directory.
func TestOutputOnFullFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	cases := []struct {
		name, format string
		room         func(allocated int64) int64 // the output filesystem's size
	}{
		// The trim works on an overlay (a few hundred KiB beside the
		// output); the output, with its 8 MiB of random data, does not fit.
		{"raw output does not fit", "raw", func(int64) int64 { return 4 << 20 }},
		{"qcow2 output does not fit", "qcow2", func(int64) int64 { return 4 << 20 }},
		// Not even the overlay fits.
		{"no room at all", "qcow2", func(int64) int64 { return 64 << 10 }},
	}
	for _, c := range cases {
		format := c.format
		t.Run(c.name, func(t *testing.T) {
			disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) {
				junk := make([]byte, 8<<20)
				rand.Read(junk)
				os.WriteFile(filepath.Join(dir, "junk"), junk, 0o644)
			}})
			full := t.TempDir()
			var st syscall.Stat_t
			if err := syscall.Stat(disk.Path, &st); err != nil {
				t.Fatal(err)
			}
			size := fmt.Sprintf("size=%dk", c.room(st.Blocks*512)>>10)
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", size, "tmpfs", full).CombinedOutput(); err != nil {
				t.Fatalf("mount tmpfs: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", full).Run() })
			before := fixture.LeakSnapshot()
			sum := fixture.Sha256(t, disk.Path)
			var p PostProcessor
			if err := p.Configure(map[string]interface{}{"format": format, "output": filepath.Join(full, "out."+format)}); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{disk.Path}})
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), "no space left on device") {
				t.Fatalf("error %v, want one saying no space is left", err)
			}
			t.Log(err)
			if fixture.Sha256(t, disk.Path) != sum {
				t.Error("the input changed")
			}
			if entries, _ := os.ReadDir(full); len(entries) > 0 {
				t.Errorf("left in the full output directory: %v", entries)
			}
			before.AssertNoLeaksIn(t, filepath.Dir(disk.Path), full)
		})
	}
}
