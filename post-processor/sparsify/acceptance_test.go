package sparsify_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// dirty writes 64 MiB of random data into the image and deletes it: a
// sparsifier must give those blocks back.
const dirty = `
  provisioner "shell" {
    inline = [
      "echo kept > /etc/factory-marker",
      "dd if=/dev/urandom of=/root/junk bs=1M count=64 2>/dev/null",
      "sync", "rm /root/junk",
    ]
  }
`

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func checkSidecar(t *testing.T, img string) {
	t.Helper()
	line, err := os.ReadFile(img + ".sha256")
	if err != nil {
		t.Fatalf("no checksum file beside %s: %v", img, err)
	}
	want := fixture.Sha256(t, img) + "  " + filepath.Base(img) + "\n"
	if string(line) != want {
		t.Errorf("%s.sha256 = %q, want %q", img, line, want)
	}
}

// TestAccSparsifyChain chains the builder and imagefactory-sparsify in a
// real packer build: raw in place (keep + forceOverride: the file Packer
// got back must survive) and a conversion to zstd qcow2 (the raw input is
// then Packer's to delete).
func TestAccSparsifyChain(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	cases := []struct {
		name, builderFormat, pp, image string
	}{
		{"raw-in-place", "raw", `post-processor "imagefactory-sparsify" {}`, "t.raw"},
		// Shrunk too; the raw input is kept to compare the files with.
		{"qcow2-zstd-shrink", "raw", `post-processor "imagefactory-sparsify" {
    format              = "qcow2"
    compression         = "zstd"
    shrink              = true
    free_space          = "8M"
    keep_input_artifact = true
  }`, "t.qcow2"},
		// A conversion of the raw artifact: Packer deletes the raw input.
		{"raw-to-qcow2", "raw", `post-processor "imagefactory-sparsify" {
    format      = "qcow2"
    compression = "zstd"
  }`, "t.qcow2"},
		// The builder's qcow2 replaced whole by the sparsified one.
		{"qcow2-in-place", "qcow2", `post-processor "imagefactory-sparsify" {
    format      = "qcow2"
    compression = "zstd"
  }`, "t.qcow2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := fixture.Packer(t)
			before := fixture.LeakSnapshot()
			state := filepath.Join(h.Base, "state")
			h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+state)
			disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
			res := h.Build(t, `
source "imagefactory" "t" {
  base_image       = "`+disk.Path+`"
  output_directory = "out"
  format           = "`+c.builderFormat+`"
}
build {
  sources = ["source.imagefactory.t"]
`+dirty+`
  `+c.pp+`
}
`, nil)
			if res.ExitCode != 0 {
				t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
			}
			img := filepath.Join(h.Dir, "out", c.image)
			if _, err := os.Stat(img); err != nil {
				t.Fatalf("the sparsified image is missing (%v):\n%s", err, res.Output)
			}
			checkSidecar(t, img)
			raw := img
			if c.image == "t.qcow2" {
				if out, err := exec.Command("qemu-img", "info", img).Output(); err != nil || !strings.Contains(string(out), "compression type: zstd") {
					t.Errorf("qemu-img info: %v\n%s", err, out)
				}
				raw = filepath.Join(t.TempDir(), "back.raw")
				if out, err := exec.Command("qemu-img", "convert", "-O", "raw", img, raw).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img convert: %v: %s", err, out)
				}
			}
			root := disk.Root()
			if input := filepath.Join(h.Dir, "out", "t.raw"); strings.Contains(c.pp, "shrink") {
				// The files are the builder's, to the byte and the metadata,
				// in a disk shrunk to its root filesystem plus 8 MiB.
				if fixture.FileSize(t, raw) >= disk.Size/2 {
					t.Errorf("the shrunk disk is %d bytes, the base %d", fixture.FileSize(t, raw), disk.Size)
				}
				if !strings.Contains(res.Output, "Shrank the root filesystem") {
					t.Errorf("no shrink reported:\n%s", res.Output)
				}
				shrunk := root
				shrunk.Size = fixture.FileSize(t, raw) - root.Offset
				want, got := fixture.Manifest(t, input, root), fixture.Manifest(t, raw, shrunk)
				if diff := fixture.ManifestDiff(want, got, 20); len(diff) > 0 {
					t.Errorf("the files changed:\n%s", strings.Join(diff, "\n"))
				}
				if len(got) < 100 {
					t.Errorf("only %d files compared", len(got))
				}
				root = shrunk
			} else if c.name == "raw-to-qcow2" {
				if _, err := os.Stat(input); !os.IsNotExist(err) {
					t.Errorf("the raw input should be gone after a conversion (keep_input_artifact is false): %v", err)
				}
			}
			// The 64 MiB written and deleted are holes again: what is left
			// is the fixture's few MiB plus metadata.
			if got, limit := allocated(t, raw), int64(24<<20); got > limit {
				t.Errorf("allocated %d bytes after sparsify; want at most %d (64 MiB were deleted)", got, limit)
			}
			if got := string(fixture.ReadFileFromPartition(t, raw, root, "/etc/factory-marker")); got != "kept\n" {
				t.Errorf("content changed: marker %q", got)
			}
			fixture.FsckPartition(t, raw, root)
			boot, _ := disk.Find("/boot")
			fixture.FsckPartition(t, raw, boot)
			before.AssertNoLeaksUnder(t, h.OwnDirs()...)
			if j, _ := filepath.Glob(filepath.Join(state, "*.journal")); len(j) > 0 {
				t.Errorf("journals left: %v", j)
			}
		})
	}
}
