package diskimage

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func needTool(tb testing.TB, names ...string) {
	tb.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			tb.Skipf("%s not installed: %v", n, err)
		}
	}
}

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (loop devices and mounts)")
	}
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// makeSparse creates a file of size bytes holding random data in chunks of
// chunk bytes at each of the given offsets; everything else is a hole.
func makeSparse(tb testing.TB, path string, size int64, chunk int64, offsets ...int64) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for _, off := range offsets {
		for done := int64(0); done < chunk; {
			n := min(int64(len(buf)), chunk-done)
			if _, err := rand.Read(buf[:n]); err != nil {
				tb.Fatal(err)
			}
			if _, err := f.WriteAt(buf[:n], off+done); err != nil {
				tb.Fatal(err)
			}
			done += n
		}
	}
	// Flushed data: a reflink of dirty pages would pay for their writeback.
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// allocated returns the bytes a file really occupies (st_blocks).
func allocated(tb testing.TB, path string) int64 {
	tb.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		tb.Fatal(err)
	}
	return st.Blocks * 512
}

func fileHash(tb testing.TB, path string) []byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatal(err)
	}
	return h.Sum(nil)
}

// sameContent compares two sparse files cheaply: same size, same data
// extents and the same bytes in them (holes read as zero on both sides).
func sameContent(tb testing.TB, a, b string) {
	tb.Helper()
	fa, err := os.Open(a)
	if err != nil {
		tb.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		tb.Fatal(err)
	}
	defer fb.Close()
	sa, _ := fa.Stat()
	sb, _ := fb.Stat()
	if sa.Size() != sb.Size() {
		tb.Fatalf("%s is %d bytes, %s is %d", a, sa.Size(), b, sb.Size())
	}
	exts, err := dataExtents(fa, sa.Size())
	if err != nil {
		tb.Fatal(err)
	}
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, e := range exts {
		for off := e.off; off < e.off+e.len; off += int64(len(ba)) {
			n := min(int64(len(ba)), e.off+e.len-off)
			if _, err := fa.ReadAt(ba[:n], off); err != nil {
				tb.Fatal(err)
			}
			if _, err := fb.ReadAt(bb[:n], off); err != nil {
				tb.Fatal(err)
			}
			if !bytes.Equal(ba[:n], bb[:n]) {
				tb.Fatalf("%s and %s differ near byte %d", a, b, off)
			}
		}
	}
}

func noFile(tb testing.TB, path string) {
	tb.Helper()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		tb.Errorf("%s should not exist (stat: %v)", path, err)
	}
}

// btrfsScratch mounts a fresh btrfs filesystem (on a loop device over a
// sparse file) and returns its mount point; cleanup unmounts and detaches.
func btrfsScratch(tb testing.TB, size int64) string {
	tb.Helper()
	needRoot(tb)
	needTool(tb, "mkfs.btrfs", "losetup", "mount", "umount")
	dir := tb.TempDir()
	img := filepath.Join(dir, "btrfs.img")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	makeSparse(tb, img, size, 0)
	run(tb, "mkfs.btrfs", "-q", img)
	dev := strings.TrimSpace(run(tb, "losetup", "--find", "--show", img))
	tb.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	run(tb, "mount", "-t", "btrfs", dev, mnt)
	tb.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			tb.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	return mnt
}
