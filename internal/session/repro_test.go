package session

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"

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

// TestOpenReproducible: a reproducible session tunes the allocator of the
// root and of /boot (mounted from the image's fstab), and NormalizeWritten
// normalizes both after Close: their superblocks' write time is the epoch.
func TestOpenReproducible(t *testing.T) {
	e := newEnv(t, fixture.Disk(t, fixture.DiskOptions{Table: "gpt", SeparateBoot: true}))
	e.opts.Repro = repro.New(1700000000, "b")
	var logs []string
	e.opts.Log = func(s string) { logs = append(logs, s) }
	s, err := Open(context.Background(), e.opts, true)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	offsets := map[int]int64{}
	for _, p := range s.Parts {
		if s.MountPointOf(p) == "" {
			continue
		}
		offsets[p.Number] = p.Start
		b, err := os.ReadFile(filepath.Join("/sys/fs/ext4", filepath.Base(p.Device), "mb_stream_req"))
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Errorf("%s mounted at %s: mb_stream_req %q (%v), want 0", p, s.MountPointOf(p), b, err)
		}
	}
	if len(offsets) != 2 {
		t.Fatalf("mounted %v, want the root and /boot", offsets)
	}
	for _, f := range []string{"etc/written", "boot/written"} {
		if err := os.WriteFile(filepath.Join(e.opts.MountPath, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.NormalizeWritten(); err == nil {
		t.Error("NormalizeWritten ran on mounted filesystems")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NormalizeWritten(); err != nil {
		t.Fatal(err)
	}
	for n, off := range offsets {
		cmd := exec.Command("dumpe2fs", "-h", fmt.Sprintf("%s?offset=%d", e.opts.Disk, off))
		cmd.Env = append(os.Environ(), "TZ=UTC")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dumpe2fs partition %d: %v\n%s", n, err, out)
		}
		if !regexp.MustCompile(`(?m)^Last write time:\s+Tue Nov 14 22:13:20 2023$`).Match(out) {
			t.Errorf("partition %d: the last write time is not the epoch:\n%s", n, out)
		}
	}
	if got := strings.Count(strings.Join(logs, "\n"), "Normalized partition"); got != 2 {
		t.Errorf("%d partitions normalized, want 2:\n%s", got, strings.Join(logs, "\n"))
	}
}
