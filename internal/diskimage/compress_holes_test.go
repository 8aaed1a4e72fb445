package diskimage

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDecompressHoleBlocks: 4 KiB data blocks scattered one per 256 KiB, as
// a filesystem's metadata is: the decompressed file allocates those blocks
// and nothing more, as cp --sparse=always does.
func TestDecompressHoleBlocks(t *testing.T) {
	needTool(t, "xz", "zstd")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	const size, every, block = 64 << 20, 256 << 10, 4 << 10
	var offs []int64
	for off := int64(every - block); off < size; off += every {
		offs = append(offs, off)
	}
	makeSparse(t, raw, size, block, offs...)
	data := int64(len(offs)) * block
	for _, tool := range [][]string{{"xz", "-c", "-0", "-T2"}, {"zstd", "-c", "-q", "-1"}} {
		t.Run(tool[0], func(t *testing.T) {
			comp := filepath.Join(dir, "disk."+tool[0])
			f, err := os.Create(comp)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(tool[0], append(tool[1:], raw)...)
			cmd.Stdout = f
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			out := filepath.Join(dir, "out-"+tool[0])
			if err := Decompress(context.Background(), comp, out, nil); err != nil {
				t.Fatal(err)
			}
			sameContent(t, raw, out)
			if a := allocated(t, out); a > data+data/100 {
				t.Errorf("decompressed file allocates %d bytes for %d bytes of data (more than 1 %% over)", a, data)
			}
		})
	}
}

// TestDecompressTruncatedXZ: a truncated xz stream, decompressed by xz(1),
// is an error carrying xz's message, not a short image.
func TestDecompressTruncatedXZ(t *testing.T) {
	needTool(t, "xz")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	makeSparse(t, raw, 8<<20, 1<<20, 0, 6<<20)
	comp := filepath.Join(dir, "disk.xz")
	f, err := os.Create(comp)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("xz", "-c", "-0", raw)
	cmd.Stdout = f
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	f.Truncate(st.Size() / 2)
	f.Close()
	out := filepath.Join(dir, "out.raw")
	err = Decompress(context.Background(), comp, out, nil)
	if err == nil || !strings.Contains(err.Error(), "xz") {
		t.Errorf("Decompress(truncated xz) = %v, want xz's error", err)
	}
	noFile(t, out)
	noFile(t, out+".part")
}
