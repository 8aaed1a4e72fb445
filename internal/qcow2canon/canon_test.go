package qcow2canon

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// writeDisk writes a raw disk of 40 MiB: random clusters (stored
// uncompressed, as they do not shrink), compressible text of many
// compressed sizes, runs of zeros, a partial last cluster.
func writeDisk(t *testing.T, path string) {
	t.Helper()
	r := rand.New(rand.NewSource(16))
	var b bytes.Buffer
	for b.Len() < 40<<20 {
		switch r.Intn(4) {
		case 0:
			chunk := make([]byte, 4096*(1+r.Intn(32)))
			r.Read(chunk)
			b.Write(chunk)
		case 1:
			b.Write(make([]byte, 4096*(1+r.Intn(64))))
		default:
			for n := r.Intn(2000); n > 0; n-- {
				fmt.Fprintf(&b, "line %d of %x\n", n, r.Intn(1<<(4*r.Intn(8))))
			}
		}
	}
	b.WriteString("tail")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Conversions of one disk in order and out of order (-W), whose files
// differ, canonicalize to the same bytes; the result is clean for
// qemu-img check and reads as the disk. Small clusters and 1-bit
// refcounts make compressed data cross cluster boundaries and fill
// refcounts up.
func TestCanonicalize(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	writeDisk(t, raw)
	for _, c := range []struct{ name, opts string }{
		{"zstd", "compression_type=zstd"},
		{"zlib", "compression_type=zlib"},
		{"zstd 4k clusters 1-bit refcounts", "compression_type=zstd,cluster_size=4096,refcount_bits=1"},
		{"zlib 2M clusters", "compression_type=zlib,cluster_size=2M"},
		{"uncompressed", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var outs [][]byte
			var ins [][]byte
			for i, w := range []string{"-W", ""} {
				in := filepath.Join(dir, fmt.Sprintf("in%d.qcow2", i))
				args := []string{"convert", "-f", "raw", "-O", "qcow2", "-m", "8", "-S", "4k"}
				if c.opts != "" {
					args = append(args, "-c", "-o", c.opts)
				}
				if w != "" {
					args = append(args, w)
				}
				qemuImg(t, append(args, raw, in)...)
				out := filepath.Join(dir, fmt.Sprintf("out%d.qcow2", i))
				if err := Canonicalize(in, out); err != nil {
					t.Fatal(err)
				}
				if got := qemuImg(t, "check", out); !strings.Contains(got, "No errors were found") {
					t.Fatalf("qemu-img check %s: %s", out, got)
				}
				qemuImg(t, "compare", "-f", "raw", "-F", "qcow2", raw, out)
				a, _ := os.ReadFile(in)
				b, _ := os.ReadFile(out)
				ins, outs = append(ins, a), append(outs, b)
			}
			if c.opts != "" && bytes.Equal(ins[0], ins[1]) {
				t.Log("qemu wrote the same file in and out of order")
			}
			if !bytes.Equal(outs[0], outs[1]) {
				t.Fatal("the canonical files of one disk differ")
			}
		})
	}
}

// Images that cannot be laid out anew are refused with the input's name.
// Where the input cannot be mapped, it is read, with the same result.
func TestCanonicalizeUnmapped(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	raw, in := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "in.qcow2")
	writeDisk(t, raw)
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", "-m", "8", "-W", "-c", "-o", "compression_type=zstd", raw, in)
	mapped, read := filepath.Join(dir, "mapped.qcow2"), filepath.Join(dir, "read.qcow2")
	if err := Canonicalize(in, mapped); err != nil {
		t.Fatal(err)
	}
	// Where sendfile is refused (EINVAL: no splice), the clusters are
	// written from the mapping.
	written := filepath.Join(dir, "written.qcow2")
	defer func(f func(int, int, *int64, int) (int, error)) { sendfile = f }(sendfile)
	sendfile = func(int, int, *int64, int) (int, error) { return 0, syscall.EINVAL }
	if err := Canonicalize(in, written); err != nil {
		t.Fatal(err)
	}
	defer func(m func(int, int64, int, int, int) ([]byte, error)) { mmap = m }(mmap)
	mmap = func(int, int64, int, int, int) ([]byte, error) { return nil, syscall.ENODEV }
	if err := Canonicalize(in, read); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(mapped)
	b, _ := os.ReadFile(read)
	c, _ := os.ReadFile(written)
	if len(a) == 0 || !bytes.Equal(a, b) || !bytes.Equal(a, c) {
		t.Errorf("read (%d bytes), written from the mapping (%d bytes) and copied (%d bytes) inputs gave other outputs", len(b), len(c), len(a))
	}
}

func TestCanonicalizeRefuses(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", base, "1M")
	over := filepath.Join(dir, "overlay.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", over)
	v2 := filepath.Join(dir, "v2.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "1M")
	snap := filepath.Join(dir, "snap.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", snap, "1M")
	qemuImg(t, "snapshot", "-c", "s1", snap)
	notq := filepath.Join(dir, "disk.raw")
	os.WriteFile(notq, make([]byte, 4096), 0o644)
	// Cut short: its tables name clusters past the end (the input is
	// mapped, so a read past it must be refused, not fault).
	cut := filepath.Join(dir, "cut.qcow2")
	raw := filepath.Join(dir, "data.raw")
	writeDisk(t, raw)
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd", raw, cut)
	if fi, err := os.Stat(cut); err != nil || os.Truncate(cut, fi.Size()/2) != nil {
		t.Fatalf("cutting %s: %v", cut, err)
	}
	for in, want := range map[string]string{
		over: "backing file",
		v2:   "version 2",
		snap: "snapshots",
		notq: "not a qcow2",
		cut:  "past the file's end",
	} {
		err := Canonicalize(in, filepath.Join(dir, "out.qcow2"))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), in) {
			t.Errorf("Canonicalize(%s) = %v, want an error naming it and %q", in, err, want)
		}
	}
}

func TestZstdFrameLen(t *testing.T) {
	// Magic, FHD 0x20 (single segment, 1-byte content size), size 5,
	// one last raw block of 5 bytes; then a neighbour's bytes.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x29, 0x00, 0x00, 'h', 'e', 'l', 'l', 'o'}
	for _, c := range []struct {
		name string
		b    []byte
		want int
	}{
		{"frame", frame, len(frame)},
		{"neighbour after", append(append([]byte{}, frame...), 0x28, 0xb5, 0x2f, 0xfd), len(frame)},
		{"rle block and checksum", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x05, 0x2b, 0x00, 0x00, 'x', 1, 2, 3, 4, 9}, 14},
		{"truncated", frame[:12], -1},
		{"no magic", []byte("hello world"), -1},
		{"reserved block type", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x07, 0x00, 0x00}, -1},
	} {
		got, err := zstdFrameLen(c.b)
		if c.want < 0 {
			if err == nil {
				t.Errorf("%s: got %d, want an error", c.name, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %d, %v; want %d", c.name, got, err, c.want)
		}
	}
}
