package packerglue

import (
	"os"
	"path/filepath"
	"testing"
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
