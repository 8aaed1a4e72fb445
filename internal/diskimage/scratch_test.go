package diskimage

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// The unordered qcow2 of a reproducible conversion goes in memory when
// the source's data fits a quarter of the memory available, else beside
// the output; both give the same bytes and leave nothing behind.
func TestScratch(t *testing.T) {
	needTool(t, "qemu-img")
	if hostMemAvailable() <= 0 {
		t.Fatal("no MemAvailable read from /proc/meminfo")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.raw")
	// 3 MiB of data in a 32 MiB disk: the data, not the size, is weighed.
	makeSparse(t, in, 32<<20, 1<<20, 0, 8<<20, 20<<20)
	defer func(f func() int64) { memAvailable = f }(memAvailable)
	var outs [][]byte
	for _, c := range []struct {
		name   string
		avail  int64
		memory bool
	}{
		{"room", 1 << 40, true},
		{"just room", 4 * 3 << 20, true},
		{"data over a quarter", 4*3<<20 - 1, false},
		{"unknown", 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			memAvailable = func() int64 { return c.avail }
			out := filepath.Join(dir, c.name, "disk.qcow2")
			os.MkdirAll(filepath.Dir(out), 0o755)
			sc, err := scratchFor(context.Background(), in, Raw, out)
			if err != nil {
				t.Fatal(err)
			}
			if got := sc.extra != nil; got != c.memory {
				t.Errorf("in memory = %v, want %v (%s)", got, c.memory, sc.path)
			}
			sc.close()
			if err := Convert(context.Background(), in, Raw, out, QCOW2, ConvertOptions{Compression: "zstd", Repro: repro.New(1767225600, "scratch")}); err != nil {
				t.Fatal(err)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "*part")); len(left) > 0 {
				t.Errorf("working files left: %v", left)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, b)
		})
	}
	for i := 1; i < len(outs); i++ {
		if !bytes.Equal(outs[0], outs[i]) {
			t.Errorf("the conversion through scratch %d differs from the first", i)
		}
	}
}
