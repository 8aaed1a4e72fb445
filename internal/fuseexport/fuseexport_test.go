package fuseexport

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE mounts")
	}
	for _, tool := range []string{"qemu-storage-daemon", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

func journal(t *testing.T) *cleanup.Journal {
	t.Helper()
	j, err := cleanup.Open(t.TempDir(), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Errorf("journal: %v", err)
		}
	})
	return j
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
}

// TestExportWritesThrough: the raw view of each format reads as the image
// and what is written to it is in the image file once the export closes.
func TestExportWritesThrough(t *testing.T) {
	requireFUSE(t)
	for _, format := range []string{"qcow2", "vmdk", "vhdx", "vpc"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			raw := filepath.Join(dir, "src.raw")
			content := make([]byte, 4<<20)
			rand.Read(content)
			if err := os.WriteFile(raw, content, 0o644); err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(dir, "disk."+format)
			qemuImg(t, "convert", "-f", "raw", "-O", format, raw, img)
			before := fixture.LeakSnapshot()

			e, err := Open(context.Background(), img, format, journal(t))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(e.Path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:len(content)], content) {
				t.Fatal("the raw view does not read as the image")
			}
			f, err := os.OpenFile(e.Path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("scrubbed"), 1<<20); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}

			back := filepath.Join(dir, "back.raw")
			qemuImg(t, "convert", "-O", "raw", img, back)
			b, _ := os.ReadFile(back)
			copy(content[1<<20:], "scrubbed")
			if !bytes.Equal(b[:len(content)], content) {
				t.Error("the write is not in the image file")
			}
			if format != "vpc" { // qemu-img cannot check vpc
				qemuImg(t, "check", img)
			}
			if _, err := os.Stat(e.Path); !os.IsNotExist(err) {
				t.Errorf("the raw view %s is left: %v", e.Path, err)
			}
			before.AssertNoLeaksIn(t, dir) // the export's mount, qemu-storage-daemon holding the image
		})
	}
}

func TestExportBadImage(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "broken.qcow2")
	os.WriteFile(img, []byte("QFI\xfbnot really a qcow2"), 0o644)
	before := fixture.LeakSnapshot()
	_, err := Open(context.Background(), img, "qcow2", journal(t))
	if err == nil || !strings.Contains(err.Error(), "could not open") {
		t.Fatalf("err = %v, want one saying the daemon could not open it", err)
	}
	t.Log(err)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left in %s: %v", dir, entries)
	}
	before.AssertNoLeaksIn(t, dir)
}
