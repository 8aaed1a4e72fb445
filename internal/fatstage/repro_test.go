package fatstage

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// TestWriteBackReproducible: the same changes written back at two moments
// (more than FAT's 2-second resolution apart) give the same FAT with a
// Source, and different ones without.
func TestWriteBackReproducible(t *testing.T) {
	need(t)
	ctx := context.Background()
	img := firmware(t, "32")
	write := func(src *repro.Source) [32]byte {
		t.Helper()
		copyImg := filepath.Join(t.TempDir(), "fat.img")
		if out, err := exec.Command("cp", img, copyImg).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		st, err := Extract(ctx, copyImg, t.TempDir(), DefaultPerms)
		if err != nil {
			t.Fatal(err)
		}
		st.Repro = src
		script := `set -e; cd "$1"
echo "dtoverlay=vc4-kms-v3d" >> config.txt
echo new > "A new file with a long name.txt"
mkdir -p overlays/sub
echo deep > overlays/sub/x.dtbo`
		if out, err := exec.Command("sh", "-c", script, "sh", st.Dir).CombinedOutput(); err != nil {
			t.Fatalf("changes: %v %s", err, out)
		}
		if _, err := st.WriteBack(ctx); err != nil {
			t.Fatal(err)
		}
		return sum(t, copyImg)
	}
	src := repro.New(1700000000, "fat")
	a := write(src)
	b0 := write(nil)
	time.Sleep(2100 * time.Millisecond)
	if b := write(src); a != b {
		t.Error("the same changes with the same Source gave different FATs")
	}
	if b1 := write(nil); b0 == b1 {
		t.Error("without a Source, two write-backs 2 s apart gave the same FAT: the test cannot see the clock")
	}
}
