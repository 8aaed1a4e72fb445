package rootfs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

const testEpoch = 1700000000 // 2023-11-14

// reproTree writes the same files into a new directory, in the given
// order of names (so the host directory's own order differs between two
// calls): old-* and one-letter names dated before testEpoch, the
// others after.
func reproTree(t *testing.T, names []string) string {
	t.Helper()
	tree := t.TempDir()
	old, late := time.Unix(testEpoch-86400, 0), time.Unix(testEpoch+86400, 5)
	for _, n := range names {
		p := filepath.Join(tree, "d", n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("file "+n), 0o644); err != nil {
			t.Fatal(err)
		}
		when := late
		if strings.HasPrefix(n, "old") || len(n) == 1 {
			when = old
		}
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
	}
	return tree
}

func makeExt4(t *testing.T, tree string, src *repro.Source) string {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk")
	const off, size = 1 << 20, 32 << 20
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, off+size); err != nil {
		t.Fatal(err)
	}
	u, err := Measure(tree)
	if err != nil {
		t.Fatal(err)
	}
	s := Spec{Type: Ext4, Label: "r", UUID: src.UUID("ext4/root/uuid").String(), Usage: u, Repro: src}
	if err := MakeExt4(context.Background(), disk, off, size, tree, s); err != nil {
		t.Fatal(err)
	}
	return disk
}

// debugfs runs one request against the filesystem at 1 MiB in disk.
func debugfs(t *testing.T, disk, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, disk+"?offset=1048576").CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v: %s", req, err, out)
	}
	return string(out)
}

// TestMakeExt4Reproducible: one Source and the same files (made in another
// order, at another time) give the same bytes; another Source does not; a
// nil Source stays random. Times after the epoch are clamped, earlier ones
// kept, and fsck finds the checksums right.
func TestMakeExt4Reproducible(t *testing.T) {
	names := []string{"zeta", "alpha", "old-m", "late-b", "Beta", "a", "b.c", "b-c"}
	rev := append([]string(nil), names...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	src := repro.New(testEpoch, "b")
	t1 := reproTree(t, names)
	time.Sleep(1100 * time.Millisecond) // another second for the second tree's ctimes and mke2fs's clock
	t2 := reproTree(t, rev)
	a, b := makeExt4(t, t1, src), makeExt4(t, t2, src)
	if fixture.Sha256(t, a) != fixture.Sha256(t, b) {
		out, _ := exec.Command("sh", "-c", "cmp -l "+a+" "+b+" | head -20").CombinedOutput()
		t.Fatalf("same Source, same files: different filesystems; differing bytes (offset, octal values):\n%s", out)
	}
	if other := makeExt4(t, t1, repro.New(testEpoch+1, "b")); fixture.Sha256(t, other) == fixture.Sha256(t, a) {
		t.Error("another epoch gave the same filesystem")
	}
	if x, y := makeExt4(t, t1, nil), makeExt4(t, t1, nil); fixture.Sha256(t, x) == fixture.Sha256(t, y) {
		t.Error("a nil Source gave the same filesystem twice: it must stay random")
	}

	fixture.E2fsck(t, a, 1<<20) // the checksums of the clamped inodes
	for _, c := range []struct {
		path  string
		mtime int64
	}{
		{"/d/zeta", testEpoch},          // written later than the epoch: clamped
		{"/d/old-m", testEpoch - 86400}, // older: kept
		{"/d/late-b", testEpoch},
		{"/d", testEpoch},
	} {
		st := debugfs(t, a, "stat "+c.path)
		want := fmt.Sprintf("mtime: 0x%08x:00000000", c.mtime)
		if !strings.Contains(st, want) {
			t.Errorf("%s: want %s in\n%s", c.path, want, st)
		}
		if ct := fmt.Sprintf("ctime: 0x%08x:00000000", int64(testEpoch)); !strings.Contains(st, ct) {
			t.Errorf("%s: the extraction's ctime is not clamped to the epoch (want %s):\n%s", c.path, ct, st)
		}
	}
	// The order mke2fs saw the files in is the names' byte order: the
	// inode numbers grow along it.
	type entry struct {
		ino  int
		name string
	}
	var got []entry
	for _, l := range strings.Split(debugfs(t, a, "ls -l /d"), "\n") {
		f := strings.Fields(l)
		var e entry
		if len(f) > 2 {
			if _, err := fmt.Sscan(f[0], &e.ino); err == nil && f[len(f)-1] != "." && f[len(f)-1] != ".." {
				e.name = f[len(f)-1]
				got = append(got, e)
			}
		}
	}
	sort.Slice(got, func(i, j int) bool { return got[i].ino < got[j].ino })
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	var byIno []string
	for _, e := range got {
		byIno = append(byIno, e.name)
	}
	if strings.Join(byIno, " ") != strings.Join(sorted, " ") {
		t.Errorf("names by inode number: %v; want the byte order %v", byIno, sorted)
	}
}
