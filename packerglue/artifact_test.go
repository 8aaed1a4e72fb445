package packerglue

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestArtifactLine(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "mine.raw")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, "gone.raw")
	for _, tt := range []struct{ what, path, detail, want string }{
		{"raw disk image", img, "1.38G", "raw disk image: " + img + " (1.38G)"},
		{"raw disk image", img, "", "raw disk image: " + img},
		{"raw disk image", gone, "1.38G", "raw disk image: " + gone + ", consumed by a later post-processor (no longer on disk)"},
	} {
		if got := ArtifactLine(tt.what, tt.path, tt.detail); got != tt.want {
			t.Errorf("ArtifactLine(%q, %q, %q) = %q, want %q", tt.what, tt.path, tt.detail, got, tt.want)
		}
	}
}

// An artifact whose file a later post-processor rewrote in place does not
// name the path again (the example's in-place qcow2 sparsify listed it
// twice); one whose file is as made, or gone, reads as ArtifactLine.
func TestArtifactLineSince(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const rewritten = "qcow2 disk image: rewritten in place by a later post-processor, whose artifact below names the file"
	for _, tt := range []struct {
		name  string
		after func(path string) // what a later post-processor does
		want  string            // %s: the path
	}{
		{"untouched", func(string) {}, "qcow2 disk image: %s (1.38 GiB)"},
		{"renamed over (sparsify qcow2 to qcow2)", func(p string) {
			if err := os.Rename(write("new.qcow2", "new"), p); err != nil {
				t.Fatal(err)
			}
		}, rewritten},
		{"written where it is (scrub, raw sparsify)", func(p string) {
			time.Sleep(10 * time.Millisecond) // past the filesystem's timestamp granularity
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("x"), 0)
			f.Close()
		}, rewritten},
		{"removed (consumed)", func(p string) { os.Remove(p) }, "qcow2 disk image: %s, consumed by a later post-processor (no longer on disk)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := write("t.qcow2", "old")
			made := StampOf(p)
			tt.after(p)
			want := tt.want
			if want != rewritten {
				want = fmt.Sprintf(tt.want, p)
			}
			if got := ArtifactLineSince("qcow2 disk image", p, "1.38 GiB", made); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
	if got := ArtifactLineSince("raw disk image", "/nonexistent/x.raw", "", Stamp{}); got != "raw disk image: /nonexistent/x.raw, consumed by a later post-processor (no longer on disk)" {
		t.Errorf("a zero stamp: %q", got)
	}
}
