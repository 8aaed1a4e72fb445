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

// TestNotCleanBefore: a FAT that fsck.fat -n already finds damaged (here
// by go-diskfs's stale free count) is staged and written back, and Clean
// says why the write-back is not checked.
func TestNotCleanBefore(t *testing.T) {
	need(t)
	img := firmware(t, "32")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	fs, err := fat32.Read(file.New(f, false), fi.Size(), 0, 512)
	if err == nil {
		var h interface{ Close() error }
		if h, err = fs.OpenFile("/damage.txt", os.O_CREATE|os.O_RDWR); err == nil {
			h.Close()
		}
	}
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := Extract(t.Context(), img, dir, DefaultPerms)
	if err != nil {
		t.Fatal(err)
	}
	if ok, out := st.Clean(); ok || !strings.Contains(out, "damage.txt") {
		t.Errorf("Clean() = %v, %q; want false with fsck.fat's words", ok, out)
	}
	if err := os.WriteFile(dir+"/config.txt", []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := st.WriteBack(t.Context()); err != nil || len(c.Copied) != 1 {
		t.Errorf("WriteBack = %v, %v", c, err)
	}
	if got := sh(t, "mtype", "-i", img, "::/config.txt"); got != "changed\n" {
		t.Errorf("config.txt = %q", got)
	}
}
