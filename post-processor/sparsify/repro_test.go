package sparsify

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sparsify"
)

// TestReproducible: one GPT disk, copied to two paths with different
// times, sparsified with the same epoch (from the input artifact's State,
// as after an imagefactory build, or from the option) gives the same bytes
// in every output; another epoch gives other bytes (the trim's mount writes
// a time in the ext4 superblocks, which the epoch replaces). The shrink
// case runs e2fsck and resize2fs and rewrites the GPT.
func TestReproducible(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	t.Setenv(repro.EnvVar, "")
	disk := fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt", SeparateBoot: true})
	base := t.TempDir()
	inputs := []string{filepath.Join(base, "a", "disk.raw"), filepath.Join(base, "b", "copy.raw")}
	for i, in := range inputs {
		os.MkdirAll(filepath.Dir(in), 0o755)
		if _, err := diskimage.Copy(context.Background(), disk.Path, in, nil); err != nil {
			t.Fatal(err)
		}
		old := time.Unix(1e9+int64(i)*86400, 0)
		os.Chtimes(in, old, old)
	}
	const epoch = 1767225600
	// run sparsifies input with cfg into out (a new directory's out.<format>).
	run := func(t *testing.T, input string, cfg map[string]interface{}, state map[string]interface{}) string {
		t.Helper()
		out := filepath.Join(t.TempDir(), "out."+cfg["format"].(string))
		c := map[string]interface{}{"output": out, "packer_build_name": "repro"}
		for k, v := range cfg {
			c[k] = v
		}
		var p PostProcessor
		if err := p.Configure(c); err != nil {
			t.Fatal(err)
		}
		art, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t),
			&packersdk.MockArtifact{FilesValue: []string{input}, StateValues: state})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := art.State(repro.StateKey).(int64); got == 0 {
			t.Errorf("the artifact does not pass the epoch on: State(%q) = %v", repro.StateKey, art.State(repro.StateKey))
		}
		return out
	}
	fromState := map[string]interface{}{repro.StateKey: int64(epoch)}
	for _, c := range []struct {
		name string
		cfg  map[string]interface{}
	}{
		{"qcow2 zstd", map[string]interface{}{"format": "qcow2", "compression": "zstd"}},
		{"qcow2 zlib", map[string]interface{}{"format": "qcow2", "compression": "zlib"}},
		{"raw", map[string]interface{}{"format": "raw"}},
		{"vhdx", map[string]interface{}{"format": "vhdx"}},
		{"qcow2 zstd shrunk", map[string]interface{}{"format": "qcow2", "compression": "zstd", "shrink": true, "free_space": "4M"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			first := run(t, inputs[0], c.cfg, fromState)
			time.Sleep(1100 * time.Millisecond) // superblock times count seconds
			opt := map[string]interface{}{"source_date_epoch": "1767225600"}
			for k, v := range c.cfg {
				opt[k] = v
			}
			second := run(t, inputs[1], opt, nil)
			if a, b := fixture.Sha256(t, first), fixture.Sha256(t, second); a != b {
				t.Errorf("the same disk, the same epoch: sha256 %s and %s", a, b)
				fixture.RequireSameDisks(t, toRaw(t, first), toRaw(t, second))
			}
			if c.name == "raw" {
				// In place, the normalization zeroes free blocks as holes,
				// not as allocated zeros.
				in := filepath.Join(t.TempDir(), "disk.raw")
				if _, err := diskimage.Copy(context.Background(), disk.Path, in, nil); err != nil {
					t.Fatal(err)
				}
				before, _ := sparsify.Allocated(in)
				var p PostProcessor
				if err := p.Configure(map[string]interface{}{"source_date_epoch": "1767225600", "packer_build_name": "repro"}); err != nil {
					t.Fatal(err)
				}
				if _, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{in}}); err != nil {
					t.Fatal(err)
				}
				// A few metadata blocks may be written where holes were.
				if after, _ := sparsify.Allocated(in); after > before+1<<20 {
					t.Errorf("sparsified in place, the disk allocates %d bytes, more than before (%d)", after, before)
				}
				if fixture.Sha256(t, in) != fixture.Sha256(t, first) {
					t.Errorf("in place and elsewhere, other bytes")
				}
			}
			if c.name != "qcow2 zstd" && c.name != "qcow2 zstd shrunk" {
				return
			}
			other := run(t, inputs[0], c.cfg, map[string]interface{}{repro.StateKey: int64(epoch + 1)})
			if fixture.Sha256(t, first) == fixture.Sha256(t, other) {
				t.Error("another epoch gave the same bytes")
			}
		})
	}
}

// TestReproducibleGarbage: two qcow2 disks of one content whose root's
// free blocks hold different garbage (deleted data) sparsify to the same
// bytes: the trim's discards through the FUSE view of a qcow2 drop where
// they cover part of a cluster, so the normalization must zero those
// blocks itself.
func TestReproducibleGarbage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	disk := fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt"})
	root := disk.Root()
	spec := fmt.Sprintf("%s?offset=%d", disk.Path, root.Offset)
	out, err := exec.Command("debugfs", "-R", "ffb 8 4000", spec).Output()
	if err != nil {
		t.Fatalf("debugfs ffb: %v", err)
	}
	free := strings.Fields(strings.TrimPrefix(strings.TrimSpace(string(out)), "Free blocks found:"))
	if len(free) != 8 {
		t.Fatalf("debugfs ffb: %q", out)
	}
	var sums []string
	for i := range 2 {
		raw := filepath.Join(t.TempDir(), "disk.raw")
		if _, err := diskimage.Copy(context.Background(), disk.Path, raw, nil); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(raw, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range free { // 4 KiB blocks (the fixture's mkfs)
			n, _ := strconv.ParseInt(b, 10, 64)
			garbage := bytes.Repeat([]byte(fmt.Sprintf("garbage of copy %d ", i)), 4096/18)
			f.WriteAt(garbage, root.Offset+n*4096)
		}
		f.Close()
		out := filepath.Join(t.TempDir(), "out.qcow2")
		var p PostProcessor
		if err := p.Configure(map[string]interface{}{"format": "qcow2", "output": out, "source_date_epoch": "1767225600"}); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{fixture.QCOW2(t, raw)}}); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, fixture.Sha256(t, out))
	}
	if sums[0] != sums[1] {
		t.Errorf("one content, other garbage in free blocks: sha256 %s and %s", sums[0], sums[1])
	}
}

// TestReproducibleXFS: the trim's mount of an xfs leaves a random
// transaction ID in its log, which a reproducible build rewrites.
func TestReproducibleXFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	disk := fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt", RootFS: "xfs"})
	var sums []string
	for i := range 2 {
		in := filepath.Join(t.TempDir(), "disk.raw")
		if _, err := diskimage.Copy(context.Background(), disk.Path, in, nil); err != nil {
			t.Fatal(err)
		}
		var p PostProcessor
		if err := p.Configure(map[string]interface{}{"source_date_epoch": "1767225600"}); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{in}}); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, fixture.Sha256(t, in))
		if i == 0 {
			time.Sleep(1100 * time.Millisecond)
		}
	}
	if sums[0] != sums[1] {
		t.Errorf("two trims of one xfs disk in place: sha256 %s and %s", sums[0], sums[1])
	}
}

// toRaw is img as a raw disk (itself when it is one), converted by
// qemu-img to compare its content.
func toRaw(t *testing.T, img string) string {
	t.Helper()
	f, err := diskimage.Detect(img)
	if err != nil || f == diskimage.Raw {
		return img
	}
	raw := filepath.Join(t.TempDir(), "content.raw")
	if err := diskimage.ConvertToRaw(context.Background(), img, f, raw, nil); err != nil {
		t.Fatal(err)
	}
	return raw
}

// A bad epoch, in the option or the environment, fails at Configure (the
// order of the epoch's sources is packerglue.TestReproSource's).
func TestConfigureEpoch(t *testing.T) {
	var p PostProcessor
	t.Setenv(repro.EnvVar, "tomorrow")
	if err := p.Configure(map[string]interface{}{}); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("a bad SOURCE_DATE_EPOCH: %v", err)
	}
	t.Setenv(repro.EnvVar, "")
	if err := p.Configure(map[string]interface{}{"source_date_epoch": "1.5"}); err == nil || !strings.Contains(err.Error(), "source_date_epoch") {
		t.Errorf("a bad source_date_epoch: %v", err)
	}
	if err := p.Configure(map[string]interface{}{"source_date_epoch": "1767225600"}); err != nil {
		t.Errorf("a good source_date_epoch: %v", err)
	}
}
