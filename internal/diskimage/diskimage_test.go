package diskimage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestDetect(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	create := func(name, format string, opts ...string) func() string {
		return func() string {
			p := filepath.Join(dir, name)
			args := append([]string{"create", "-q", "-f", format}, opts...)
			run(t, "qemu-img", append(args, p, "16M")...)
			return p
		}
	}
	write := func(name string, data []byte) func() string {
		return func() string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	tests := []struct {
		name string
		make func() string
		want Format
	}{
		{"qcow2", create("a.img", "qcow2"), QCOW2},
		{"vmdk sparse", create("b.raw", "vmdk"), VMDK},
		{"vmdk descriptor", create("c.vmdk", "vmdk", "-o", "subformat=monolithicFlat"), VMDK},
		{"vhdx", create("d.img", "vhdx"), VHDX},
		{"vpc dynamic", create("e.vhd", "vpc"), VPC},
		{"vpc fixed (footer only)", create("f.vhd", "vpc", "-o", "subformat=fixed"), VPC},
		{"vdi", create("g.vdi", "vdi"), VDI},
		{"raw zeros named qcow2", create("h.qcow2", "raw"), Raw},
		{"empty file", write("i.img", nil), Raw},
		{"tiny file", write("j.img", []byte("QF")), Raw},
		{"qcow2 magic only", write("k.img", []byte("QFI\xfb")), QCOW2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Detect(tt.make())
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Detect = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := Detect(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Detect(missing) error = %v, want one naming the file", err)
	}
}

func TestDecompress(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	const size, chunk = 64 << 20, 2 << 20
	makeSparse(t, raw, size+12345, chunk, 0, 20<<20, 63<<20) // odd size: a partial last block
	want := fileHash(t, raw)
	st, err := os.Stat(raw)
	if err != nil {
		t.Fatal(err)
	}
	rawSize := st.Size()

	tests := []struct {
		kind Compression
		tool []string
	}{
		{Gzip, []string{"gzip", "-c", "-1"}},
		{XZ, []string{"xz", "-c", "-0", "-T2"}},
		{Zstd, []string{"zstd", "-c", "-q", "-1"}},
		{NoCompression, []string{"cat"}},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			needTool(t, tt.tool[0])
			comp := filepath.Join(dir, "disk."+string(tt.kind))
			f, err := os.Create(comp)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(tt.tool[0], append(tt.tool[1:], raw)...)
			cmd.Stdout = f
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			f.Close()

			got, err := DetectCompression(comp)
			if err != nil || got != tt.kind {
				t.Fatalf("DetectCompression = %q, %v; want %q", got, err, tt.kind)
			}

			out := filepath.Join(dir, "out-"+string(tt.kind)+".raw")
			var lastDone, lastTotal int64
			err = Decompress(context.Background(), comp, out, ProgressFunc(func(done, total int64) {
				lastDone, lastTotal = done, total
			}))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(fileHash(t, out), want) {
				t.Fatal("decompressed content differs from the original")
			}
			st, _ := os.Stat(comp)
			if lastTotal != st.Size() || lastDone != st.Size() {
				t.Errorf("progress ended at %d/%d, want %d/%d", lastDone, lastTotal, st.Size(), st.Size())
			}
			if a := allocated(t, out); a > 3*chunk+(1<<20) {
				t.Errorf("output allocates %d bytes, want about %d (sparse)", a, 3*chunk)
			}
			noFile(t, out+".part")

			head, err := DecompressedHead(comp, 4<<20)
			if err != nil || !bytes.Equal(head, readHead(t, raw, 4<<20)) {
				t.Errorf("DecompressedHead: %d bytes, %v; want the original's first 4 MiB", len(head), err)
			}
			if head, err := DecompressedHead(comp, size*2); err != nil || int64(len(head)) != rawSize {
				t.Errorf("DecompressedHead past the end: %d bytes, %v; want all %d", len(head), err, rawSize)
			}
		})
	}
}

func readHead(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecompressCancelAndCorrupt(t *testing.T) {
	needTool(t, "gzip")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	makeSparse(t, raw, 64<<20, 32<<20, 0)
	run(t, "gzip", "-1", "-k", raw)
	comp := raw + ".gz"

	ctx, cancel := context.WithCancel(context.Background())
	out := filepath.Join(dir, "out.raw")
	err := Decompress(ctx, comp, out, ProgressFunc(func(done, total int64) { cancel() }))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Decompress after cancel: err = %v, want context.Canceled", err)
	}
	noFile(t, out)
	noFile(t, out+".part")

	// A truncated download must fail, not produce a short image.
	data, err := os.ReadFile(comp)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.gz")
	if err := os.WriteFile(cut, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Decompress(context.Background(), cut, out, nil); err == nil || !strings.Contains(err.Error(), cut) {
		t.Errorf("Decompress(truncated) err = %v, want an error naming %s", err, cut)
	}
	noFile(t, out)
	noFile(t, out+".part")
}

func TestCopySparse(t *testing.T) {
	dir := t.TempDir() // /tmp: ext4 here, no reflink
	src := filepath.Join(dir, "src.raw")
	const size, data = 4 << 30, 64 << 20
	makeSparse(t, src, size, data/4, 0, 1<<30, 2<<30, size-data/4)

	dst := filepath.Join(dir, "dst.raw")
	var done int64
	m, err := Copy(context.Background(), src, dst, func(n int64) { done += n })
	if err != nil {
		t.Fatal(err)
	}
	if m != SparseCopy && m != Reflink {
		t.Fatalf("method %q", m)
	}
	t.Logf("method %s", m)
	sameContent(t, src, dst)
	if a := allocated(t, dst); a > data+(4<<20) {
		t.Errorf("copy allocates %d bytes, want about %d", a, data)
	}
	if m == SparseCopy && done != data {
		t.Errorf("progress reported %d bytes, want %d (data bytes only)", done, data)
	}
	st, _ := os.Stat(dst)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	noFile(t, dst+".part")

	// Trailing hole and empty file.
	for _, tc := range []struct {
		name string
		size int64
		offs []int64
	}{{"trailing-hole", 10 << 20, []int64{0}}, {"all-hole", 10 << 20, nil}, {"empty", 0, nil}} {
		s := filepath.Join(dir, tc.name)
		makeSparse(t, s, tc.size, 1<<20, tc.offs...)
		d := s + ".copy"
		if _, err := Copy(context.Background(), s, d, nil); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		sameContent(t, s, d)
	}
}

func TestCopyCancel(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	makeSparse(t, src, 256<<20, 64<<20, 0, 128<<20)
	dst := filepath.Join(dir, "dst.raw")
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	m, err := Copy(ctx, src, dst, func(int64) {
		calls.Add(1)
		cancel()
	})
	if m == Reflink {
		t.Skip("filesystem reflinks: nothing to cancel")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if calls.Load() == 0 {
		t.Error("no progress before cancel")
	}
	noFile(t, dst)
	noFile(t, dst+".part")
}

func TestCopyReflink(t *testing.T) {
	mnt := btrfsScratch(t, 1<<30)
	src := filepath.Join(mnt, "src.raw")
	makeSparse(t, src, 1<<30, 32<<20, 0, 512<<20)
	dst := filepath.Join(mnt, "dst.raw")
	m, err := Copy(context.Background(), src, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m != Reflink {
		t.Errorf("method on btrfs = %q, want reflink", m)
	}
	sameContent(t, src, dst)

	// Across filesystems the clone fails with EXDEV: falls back.
	other := filepath.Join(t.TempDir(), "x.raw")
	m, err = Copy(context.Background(), src, other, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m != SparseCopy {
		t.Errorf("method across filesystems = %q, want sparse-copy", m)
	}
	sameContent(t, src, other)
}

func TestInspect(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "data.raw")
	makeSparse(t, raw, 64<<20, 32<<20, 0)
	good := filepath.Join(dir, "good.qcow2")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, good)

	truncated := filepath.Join(dir, "truncated.qcow2")
	run(t, "cp", good, truncated)
	st, _ := os.Stat(good)
	if err := os.Truncate(truncated, st.Size()/2); err != nil {
		t.Fatal(err)
	}

	missing := filepath.Join(dir, "gone", "base.qcow2")
	overlay := filepath.Join(dir, "overlay.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", missing, "-F", "qcow2", overlay, "64M")

	withBacking := filepath.Join(dir, "child.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "good.qcow2", "-F", "qcow2", withBacking)

	tests := []struct {
		name    string
		path    string
		want    Info
		wantErr []string
	}{
		{"raw", raw, Info{Format: Raw, VirtualSize: 64 << 20}, nil},
		{"qcow2", good, Info{Format: QCOW2, VirtualSize: 64 << 20}, nil},
		{"relative backing", withBacking, Info{Format: QCOW2, VirtualSize: 64 << 20, BackingFile: good, BackingFormat: QCOW2}, nil},
		{"truncated qcow2", truncated, Info{}, []string{"qcow2 is damaged", "download it again"}},
		{"missing backing file", overlay, Info{}, []string{"its backing file", missing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := Inspect(context.Background(), tt.path)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, info %+v", info)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != tt.want.Format || info.VirtualSize != tt.want.VirtualSize ||
				info.BackingFile != tt.want.BackingFile || info.BackingFormat != tt.want.BackingFormat {
				t.Errorf("Inspect = %+v, want %+v", info, tt.want)
			}
			if info.ActualSize <= 0 {
				t.Errorf("actual size %d", info.ActualSize)
			}
		})
	}
}

func TestConvert(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "data.raw")
	makeSparse(t, raw, 256<<20, 8<<20, 0, 100<<20, 200<<20)

	tests := []struct {
		name string
		fmt  Format
		opts ConvertOptions
	}{
		{"qcow2", QCOW2, ConvertOptions{}},
		{"qcow2 zstd", QCOW2, ConvertOptions{Compression: "zstd"}},
		{"qcow2 zlib", QCOW2, ConvertOptions{Compression: "zlib"}},
		{"vmdk", VMDK, ConvertOptions{}},
		{"vpc", VPC, ConvertOptions{}},
		{"vhdx", VHDX, ConvertOptions{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".img")
			if err := Convert(context.Background(), raw, Raw, img, tt.fmt, tt.opts); err != nil {
				t.Fatal(err)
			}
			if got, _ := Detect(img); got != tt.fmt {
				t.Fatalf("Detect(converted) = %q, want %q", got, tt.fmt)
			}
			back := img + ".raw"
			var pcts []float64
			if err := ConvertToRaw(context.Background(), img, tt.fmt, back, func(p float64) { pcts = append(pcts, p) }); err != nil {
				t.Fatal(err)
			}
			if tt.fmt == VPC { // vpc rounds the size up to its CHS geometry
				if st, _ := os.Stat(back); st.Size() < 256<<20 {
					t.Fatalf("vpc round trip is %d bytes, want >= %d", st.Size(), 256<<20)
				}
				if err := os.Truncate(back, 256<<20); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(fileHash(t, raw), fileHash(t, back)) {
				t.Error("round trip changed the content")
			}
			if len(pcts) == 0 || pcts[len(pcts)-1] != 100 {
				t.Errorf("progress %v, want it to end at 100", pcts)
			}
			if a := allocated(t, back); a > 24<<20+(1<<20) {
				t.Errorf("raw output allocates %d bytes, want about 24 MiB (sparse)", a)
			}
			noFile(t, back+".part")
		})
	}

	t.Run("compress needs qcow2", func(t *testing.T) {
		err := Convert(context.Background(), raw, Raw, filepath.Join(dir, "x.vmdk"), VMDK, ConvertOptions{Compression: "zstd"})
		if err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("qemu-img error carries stderr", func(t *testing.T) {
		notQcow := filepath.Join(dir, "x.qcow2")
		err := ConvertToRaw(context.Background(), raw, QCOW2, notQcow, nil)
		if err == nil || !strings.Contains(err.Error(), "qcow2") || !strings.Contains(err.Error(), "Image is not in qcow2 format") {
			t.Fatalf("err = %v", err)
		}
		noFile(t, notQcow+".part")
	})
	t.Run("cancel kills qemu-img and removes the part file", func(t *testing.T) {
		before := fixture.LeakSnapshot()
		big := filepath.Join(dir, "big.raw")
		makeSparse(t, big, 1<<30, 256<<20, 0, 512<<20)
		out := filepath.Join(dir, "big.qcow2")
		ctx, cancel := context.WithCancel(context.Background())
		err := Convert(ctx, big, Raw, out, QCOW2, ConvertOptions{Compression: "zstd", Progress: func(p float64) {
			if p > 1 {
				cancel()
			}
		}})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		noFile(t, out)
		noFile(t, out+".part")
		before.AssertNoLeaksIn(t, dir) // qemu-img among them: it names and holds big
	})
}

func TestGrow(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.raw")
	makeSparse(t, p, 4<<30, 1<<20, 0)
	if err := Grow(p, 8<<30); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Size() != 8<<30 {
		t.Errorf("size %d after Grow", st.Size())
	}
	if a := allocated(t, p); a > 2<<20 {
		t.Errorf("grow allocated %d bytes", a)
	}
	err := Grow(p, 1<<30)
	if err == nil || !strings.Contains(err.Error(), "disk_size 1 GiB is smaller than the image's 8 GiB") {
		t.Errorf("shrink: err = %v", err)
	}
	if err := Grow(p, 8<<30); err != nil {
		t.Errorf("same size: %v", err)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		q := filepath.Join(dir, "disk.qcow2")
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", q, "1G")
		if err := Grow(q, 2<<30); err == nil || !strings.Contains(err.Error(), "qcow2") {
			t.Errorf("grow qcow2: err = %v", err)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"4G", 4 << 30, false},
		{"4GiB", 4 << 30, false},
		{"4GB", 4 << 30, false},
		{"4g", 4 << 30, false},
		{"512M", 512 << 20, false},
		{"512MiB", 512 << 20, false},
		{"10240", 10240, false},
		{"10240B", 10240, false},
		{"1.5G", 3 << 29, false},
		{"2T", 2 << 40, false},
		{"1K", 1024, false},
		{" 8 G ", 8 << 30, false},
		{"0.1K", 0, true},
		{"", 0, true},
		{"G", 0, true},
		{"4X", 0, true},
		{"-4G", 0, true},
		{"1.2.3G", 0, true},
		{"99999999P", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
	for n, want := range map[int64]string{4 << 30: "4 GiB", 3 << 29: "1.50 GiB", 512: "512 B", 0: "0 B", 1 << 20: "1 MiB", 1536: "1.50 KiB", 5 << 40: "5 TiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{62400 * time.Millisecond: "62.4s", 9 * time.Millisecond: "0.009s", time.Second: "1.0s", 75 * time.Second: "75.0s", 0: "0.000s"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestFindDisk(t *testing.T) {
	dir := t.TempDir()
	qcow := filepath.Join(dir, "image.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", qcow, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	sum := filepath.Join(dir, "image.qcow2.sha256")
	report := filepath.Join(dir, "image.scrub.json")
	for _, f := range []string{sum, report} {
		if err := os.WriteFile(f, []byte("not a disk\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		files   []string
		want    string
		wantErr bool
	}{
		{"sidecars first", []string{sum, report, qcow}, qcow, false},
		{"only sidecars", []string{sum, report}, "", true},
		{"missing file", []string{filepath.Join(dir, "gone.raw")}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, format, err := FindDisk(tt.files)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("FindDisk = %q, %q, %v; want %q (error %v)", got, format, err, tt.want, tt.wantErr)
			}
			if err == nil && format != QCOW2 {
				t.Errorf("format %q", format)
			}
		})
	}
}
