package diskimage

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// benchCopy copies a 4 GiB image holding 1 GiB of data, b.N times, in dir.
func benchCopy(b *testing.B, dir string, want Method) {
	src := filepath.Join(dir, "src.raw")
	makeSparse(b, src, 4<<30, 256<<20, 0, 1<<30, 2<<30, 3<<30)
	dst := filepath.Join(dir, "dst.raw")
	b.SetBytes(1 << 30) // data bytes
	b.ResetTimer()
	for b.Loop() {
		m, err := Copy(context.Background(), src, dst, nil)
		if err != nil {
			b.Fatal(err)
		}
		if m != want {
			b.Fatalf("method %q, want %q", m, want)
		}
		b.StopTimer()
		os.Remove(dst)
		b.StartTimer()
	}
}

// BenchmarkCopySparse measures the hole-skipping copy on the temp
// directory's filesystem (ext4 here). Cost should follow the 1 GiB of data.
func BenchmarkCopySparse(b *testing.B) {
	benchCopy(b, b.TempDir(), SparseCopy)
}

// BenchmarkCopyReflink measures FICLONE on btrfs: it should take well under
// 50 ms for 1 GiB of data, whatever the size.
func BenchmarkCopyReflink(b *testing.B) {
	benchCopy(b, btrfsScratch(b, 3<<30), Reflink)
}
