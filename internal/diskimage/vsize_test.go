package diskimage

import (
	"context"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestPeekVirtualSize(t *testing.T) {
	needTool(t, "xz", "zstd", "gzip", "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	const size = 96<<20 + 4096 // not a whole number of xz blocks or zstd frames
	makeSparse(t, raw, size, 1<<20, 0, 40<<20, 95<<20)
	qcow := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", qcow, "3G")
	vmdk := filepath.Join(dir, "disk.vmdk")
	run(t, "qemu-img", "create", "-q", "-f", "vmdk", vmdk, "2G")

	compress := func(src, name string, stdin bool, tool ...string) string {
		out := filepath.Join(dir, name)
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command(tool[0], tool[1:]...)
		if stdin {
			in, err := os.Open(filepath.Join(dir, src))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			cmd.Stdin = in
		} else {
			cmd.Args = append(cmd.Args, filepath.Join(dir, src))
		}
		cmd.Stdout = f
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v: %v", tool, err)
		}
		return out
	}
	// Two xz streams with padding between them, as `cat a.xz b.xz` makes.
	xzA := compress("disk.raw", "disk.raw.xz", false, "xz", "-c", "-0", "-T2", "--block-size=8MiB")
	cat := filepath.Join(dir, "two.xz")
	b, _ := os.ReadFile(xzA)
	b = append(append(append([]byte{}, b...), 0, 0, 0, 0), b...)
	if err := os.WriteFile(cat, b, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
		want int64
		from SizeSource
	}{
		{"raw", raw, size, SizeFile},
		{"qcow2", qcow, 3 << 30, SizeQCOW2},
		{"vmdk", vmdk, 2 << 30, SizeVMDK},
		{"xz, blocks of 8 MiB", xzA, size, SizeXZIndex},
		{"xz, two streams", cat, 2 * size, SizeXZIndex},
		{"xz qcow2", compress("disk.qcow2", "disk.qcow2.xz", false, "xz", "-c", "-0"), 3 << 30, SizeQCOW2},
		{"zstd", compress("disk.raw", "disk.raw.zst", false, "zstd", "-c", "-q", "-1"), size, SizeZstdFrames},
		{"zstd, multithreaded", compress("disk.raw", "disk-mt.raw.zst", false, "zstd", "-c", "-q", "-1", "-T2", "-B1048576"), size, SizeZstdFrames},
		{"zstd from a pipe", compress("disk.raw", "disk-pipe.raw.zst", true, "zstd", "-c", "-q", "-1"), 0, SizeUnknown},
		{"zstd qcow2", compress("disk.qcow2", "disk.qcow2.zst", false, "zstd", "-c", "-q"), 3 << 30, SizeQCOW2},
		{"gzip", compress("disk.raw", "disk.raw.gz", false, "gzip", "-c", "-1"), 0, SizeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, from, err := PeekVirtualSize(tt.path)
			if err != nil || got != tt.want || from != tt.from {
				t.Errorf("PeekVirtualSize = %d from %q, %v; want %d from %q", got, from, err, tt.want, tt.from)
			}
		})
	}

	// A damaged index is an error, not a wrong size.
	b, _ = os.ReadFile(xzA)
	b[len(b)-8]++ // the footer's backward size
	bad := filepath.Join(dir, "bad.xz")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if n, from, err := PeekVirtualSize(bad); err == nil {
		t.Errorf("a damaged xz index gave %d from %q, want an error", n, from)
	}
}

func TestCheckQCOW2Compat(t *testing.T) {
	tests := []struct {
		compat, compression, wantErr string
	}{
		{"", "", ""},
		{"1.1", "zstd", ""},
		{"0.10", "", ""},
		{"0.10", "zlib", ""},
		{"0.10", "zstd", `qcow2_compat "0.10" cannot hold zstd compressed clusters (a 0.10 image has no compression type field): use compression = "zlib", or qcow2_compat = "1.1"`},
		{"1.0", "", `qcow2_compat "1.0" is not supported; use "1.1" (the default, QEMU 1.1 and later) or "0.10" (older QEMU)`},
	}
	for _, tt := range tests {
		err := CheckQCOW2Compat(tt.compat, tt.compression)
		if got := errString(err); got != tt.wantErr {
			t.Errorf("CheckQCOW2Compat(%q, %q) = %q, want %q", tt.compat, tt.compression, got, tt.wantErr)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestConvertCompat: qemu-img info reports the compat asked for.
func TestConvertCompat(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	makeSparse(t, raw, 16<<20, 1<<20, 0)
	for _, compat := range []string{"0.10", "1.1"} {
		out := filepath.Join(dir, "disk-"+compat+".qcow2")
		if err := Convert(context.Background(), raw, Raw, out, QCOW2, ConvertOptions{Compat: compat, Compression: map[string]string{"0.10": "zlib", "1.1": "zstd"}[compat]}); err != nil {
			t.Fatal(err)
		}
		if got := fixture.QCOW2Compat(t, out); got != compat {
			t.Errorf("qemu-img info says compat %q, want %q", got, compat)
		}
		run(t, "qemu-img", "compare", "-q", raw, out) // same content, or it fails
	}
}
