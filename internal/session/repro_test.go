package session

import (
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// TestNormalizeWrittenWarns: a filesystem other than ext2/3/4 written in a
// reproducible session is named in a note (partition and filesystem), not
// touched; a session without a Source does nothing; a session still
// holding its mounts refuses.
func TestNormalizeWrittenWarns(t *testing.T) {
	written := []Partition{
		{Partition: partition.Partition{Number: 2, Start: 1 << 20, Size: 1 << 20}, FS: mounts.FS{Type: "xfs"}},
		{Partition: partition.Partition{Number: 3, Start: 2 << 20, Size: 1 << 20}, FS: mounts.FS{Type: "btrfs"}},
	}
	for _, c := range []struct {
		name  string
		s     *Session
		notes []string
		err   string
	}{
		{"xfs and btrfs", &Session{opts: Options{Disk: "/nonexistent", Repro: repro.New(1, "b")}, written: written},
			[]string{"partition 2 (xfs)", "partition 3 (btrfs)"}, ""},
		{"not reproducible", &Session{opts: Options{Disk: "/nonexistent"}, written: written}, nil, ""},
		{"still attached", &Session{opts: Options{Repro: repro.New(1, "b")}, Parts: []*Partition{{}}}, nil, "unmounted and detached"},
	} {
		t.Run(c.name, func(t *testing.T) {
			notes, err := c.s.NormalizeWritten()
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(notes) != len(c.notes) {
				t.Fatalf("notes %q, want %d", notes, len(c.notes))
			}
			for i, want := range c.notes {
				if !strings.Contains(notes[i], want) || !strings.Contains(notes[i], "not made reproducible") {
					t.Errorf("note %q does not name %q", notes[i], want)
				}
			}
		})
	}
}
