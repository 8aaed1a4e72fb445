package imagefactory_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// qemuImgFormat is the format qemu-img detects in path.
func qemuImgFormat(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info.Format
}

// toRaw converts an image to raw with qemu-img, for inspection.
func toRaw(t *testing.T, path string) string {
	t.Helper()
	return convertTo(t, path, "raw")
}

// convertTo converts an image (of a format qemu-img detects: ours) to
// another format with qemu-img.
func convertTo(t *testing.T, raw, format string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "converted."+format)
	if b, err := exec.Command("qemu-img", "convert", "-O", format, raw, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert to %s: %v: %s", format, err, b)
	}
	return out
}

// serveFile serves one file on loopback at any path under /images/ and
// returns the server's base URL.
func serveFile(t *testing.T, path string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/images/") {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, path)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// grownSize reads the size of partition p from the image's table with
// sfdisk (not our code).
func grownSize(t *testing.T, img string, p fixture.Partition) int64 {
	t.Helper()
	if p.Number == 0 {
		return 0 // whole disk: ReadFileFromPartition uses the file's size
	}
	tab, err := fixture.ReadTable(t, img)
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", img, err)
	}
	parts := tab.PartitionTable.Partitions
	if p.Number > len(parts) {
		t.Fatalf("partition %d missing from the table: %+v", p.Number, parts)
	}
	return parts[p.Number-1].Size * tab.PartitionTable.SectorSize
}

// grownExt4 is partition p of img grown to size bytes: fsck finds its ext4
// clean and filling it (to a block).
func grownExt4(t *testing.T, img string, p fixture.Partition, size int64) fixture.Partition {
	t.Helper()
	p.Size = size
	fixture.FsckPartition(t, img, p)
	h := fixture.Ext4Header(t, img, p.Offset)
	if fsSize := h["Block count"] * h["Block size"]; fsSize > size || fsSize <= size-h["Block size"] {
		t.Errorf("the ext4 of partition %d is %d bytes, want the partition's %d (to a block)", p.Number, fsSize, size)
	}
	return p
}

// verifyGPT checks the table with sgdisk: both headers, CRCs, backup at the
// end of the disk.
func verifyGPT(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("sgdisk", "-v", img).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v %s: %v\n%s", img, err, out)
	}
}
