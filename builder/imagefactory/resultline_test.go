package imagefactory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The builder's result lines, golden: time in seconds and sizes with IEC
// units, the allocation shown when the file is sparse ("sparse-copy of 512
// (4K allocated)" read as two numbers without units).
func TestDoneLine(t *testing.T) {
	for _, tt := range []struct {
		what      string
		took      time.Duration
		apparent  int64
		allocated int64
		want      string
	}{
		{"Working disk: sparse-copy of base_image mine.raw", 1500 * time.Millisecond, 1 << 30, 19 << 20,
			"Working disk: sparse-copy of base_image mine.raw in 1.5s: 1 GiB (19 MiB allocated)"},
		{"Converted to qcow2: out/t.qcow2", 2527 * time.Millisecond, 231211008, 231211008,
			"Converted to qcow2: out/t.qcow2 in 2.5s: 220.50 MiB"},
		{"Wrote the SBOM", 9 * time.Millisecond, 512, 4096, "Wrote the SBOM in 0.009s: 512 B"},
		{"Provisioning", 75 * time.Second, -1, 0, "Provisioning in 75.0s"},
	} {
		size := ""
		if tt.apparent >= 0 {
			size = sizeLine(tt.apparent, tt.allocated)
		}
		got := doneLine(tt.what, tt.took, size)
		if got != tt.want {
			t.Errorf("doneLine(%q) = %q, want %q", tt.what, got, tt.want)
		}
		if strings.Contains(got, "()") || strings.Contains(got, " bytes") {
			t.Errorf("%q: empty parentheses or a bare byte count", got)
		}
	}
	// A real sparse file: its allocation is told.
	p := filepath.Join(t.TempDir(), "sparse.raw")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 64<<20); err != nil {
		t.Fatal(err)
	}
	if got := fileSize(p); !strings.HasPrefix(got, "64 MiB (") || !strings.HasSuffix(got, " allocated)") {
		t.Errorf("fileSize of a sparse 64 MiB file: %q", got)
	}
	if got := fileSize(filepath.Join(t.TempDir(), "gone")); got != "" {
		t.Errorf("fileSize of a missing file: %q", got)
	}
}
