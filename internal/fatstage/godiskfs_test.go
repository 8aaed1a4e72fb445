package fatstage

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// TestGoDiskfsFATWriter keeps the measurement behind this package's design
// (package doc): the go-diskfs in go.mod writes FAT32 that fsck.fat -n
// finds damaged, each case alone on a fresh FAT. When this test fails
// after a go-diskfs upgrade, its writer has become clean: measure again
// whether a FUSE server on it could replace the mtools copy.
func TestGoDiskfsFATWriter(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		name string
		op   func(fs *fat32.FileSystem) error
		want string // what fsck.fat -n says
	}{
		{"remove leaks the clusters", func(fs *fat32.FileSystem) error { return fs.Remove("/remove-me.txt") }, "Reclaimed"},
		{"rename over a file leaks its clusters", func(fs *fat32.FileSystem) error { return fs.Rename("/config.txt", "/cmdline.txt") }, "Reclaimed"},
		{"an empty file keeps a cluster", func(fs *fat32.FileSystem) error {
			f, err := fs.OpenFile("/empty", os.O_CREATE|os.O_RDWR)
			if err == nil {
				f.Close()
			}
			return err
		}, "cluster chain length is > 0 bytes"},
		{"a write leaves the free count stale", func(fs *fat32.FileSystem) error {
			f, err := fs.OpenFile("/new.txt", os.O_CREATE|os.O_RDWR)
			if err == nil {
				_, err = f.Write([]byte(strings.Repeat("x", 4096)))
			}
			return err
		}, "Free cluster summary wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := firmware(t, "32")
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			fs, err := fat32.Read(file.New(f, false), fi.Size(), 0, 512)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.op(fs); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("fsck.fat", "-n", img).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("go-diskfs now leaves a FAT that fsck.fat -n reports as %v:\n%s\nwant %q: re-measure it against mtools (package doc)", err, out, tc.want)
			}
		})
	}
}
