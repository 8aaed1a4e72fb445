package cleanup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An aborted build's journal, kept: its loop device, mount, chroot
// process and files stay through Reap (listed as kept), and ReapJournal
// releases them all, then removes the output directory last.
func TestKeepThenReapJournal(t *testing.T) {
	requireRoot(t, "mkfs.ext4")
	dir := workDir(t)
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	img := filepath.Join(out, "disk.raw")
	ext4Image(t, img, 32<<20)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)

	j, err := Open(state, "kept build")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()                       // a no-op once kept
	t.Cleanup(func() { ReapKept(state) }) // if the test fails half-way
	if _, err := j.Take(FileEntry(img)); err != nil {
		t.Fatal(err)
	}
	dev := mountChroot(t, j, img, mnt)
	startChrooted(t, mnt, "sleep", "1000")
	waitRooted(t, mnt, 1)

	kept, err := j.Keep(DirEntry(out))
	if err != nil {
		t.Fatalf("Keep: %v", err)
	}
	if len(kept) != 4 || kept[2].Kind != KindMount || kept[2].Path != mnt {
		t.Errorf("Keep returned %v, want the 4 entries in take order", kept)
	}
	if !j.Closed() {
		t.Error("the journal is not closed after Keep")
	}
	if err := j.Teardown(); err != nil {
		t.Errorf("Teardown after Keep: %v", err)
	}

	// A later build's Reap leaves it all, and says so.
	rep, err := Reap(state)
	if err != nil || !rep.Empty() {
		t.Fatalf("Reap = %+v, %v; want nothing released", rep, err)
	}
	if len(rep.Kept) != 1 || rep.Kept[0].Journal != j.Path() || rep.Kept[0].Label != "kept build" ||
		len(rep.Kept[0].Mounts) != 1 || rep.Kept[0].Mounts[0] != mnt {
		t.Errorf("Reap's kept list = %+v, want the journal with mount %s", rep.Kept, mnt)
	}
	if want := []string{img, out}; strings.Join(rep.Kept[0].Files, " ") != strings.Join(want, " ") {
		t.Errorf("kept files = %q, want %q", rep.Kept[0].Files, want)
	}
	if ok, _ := IsMountPoint(mnt); !ok {
		t.Fatal("Reap unmounted a kept build")
	}
	if len(rootedPids(mnt)) != 1 {
		t.Error("Reap killed a kept build's process")
	}

	// Its owner (this process) still lives: a kept journal is released all
	// the same, it was handed over.
	rep, err = ReapJournal(j.Path())
	if err != nil {
		t.Fatalf("ReapJournal: %v", err)
	}
	t.Logf("released: %q", rep.Released)
	// Keep dropped our fd: once unmounted, the kernel frees the device.
	for _, w := range []string{"killed 1 process", "unmounted " + mnt, dev.Path() + " (backing " + img, "removed " + img, "removed " + out} {
		if !containsLine(rep.Released, w) {
			t.Errorf("released %q lacks %q", rep.Released, w)
		}
	}
	if last := rep.Released[len(rep.Released)-1]; last != "removed "+out {
		t.Errorf("the output directory is not removed last: %q", rep.Released)
	}
	if js := journals(t, state); len(js) != 0 {
		t.Errorf("journals left: %v", js)
	}
	if _, err := ReapJournal(j.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReapJournal of a reaped journal: %v, want not exist", err)
	}
}

// A journal in use is never released by ReapJournal or ReapKept; a
// kept output directory that holds files the build did not make (a newer
// build's) is left alone.
func TestReapJournalRefusesLiveAndReplaced(t *testing.T) {
	requireRoot(t)
	dir := workDir(t)
	state := filepath.Join(dir, "state")
	file := filepath.Join(dir, "held")
	os.WriteFile(file, nil, 0o600)

	live, err := Open(state, "live")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := live.Take(FileEntry(file)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReapJournal(live.Path()); !errors.Is(err, ErrLive) {
		t.Errorf("ReapJournal of a live journal: %v, want ErrLive", err)
	}
	rep, err := ReapKept(state)
	if err != nil || !rep.Empty() || len(rep.Live) != 1 {
		t.Errorf("ReapKept = %+v, %v; want the live journal listed, nothing done", rep, err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("a live build's file went: %v", err)
	}

	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	kept, err := Open(state, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kept.Take(FileEntry(filepath.Join(out, "work.raw"))); err != nil {
		t.Fatal(err)
	}
	if _, err := kept.Keep(DirEntry(out)); err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	os.Mkdir(out, 0o755) // a newer build's, same name
	os.WriteFile(filepath.Join(out, "artifact"), nil, 0o600)
	rep, err = ReapJournal(kept.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !containsLine(rep.Released, "left "+out) {
		t.Errorf("released %q, want %s left alone", rep.Released, out)
	}
	if _, err := os.Stat(filepath.Join(out, "artifact")); err != nil {
		t.Errorf("the newer output directory was touched: %v", err)
	}
}

func TestReapJournalRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "notes.txt")
	os.WriteFile(p, []byte("x"), 0o600)
	if _, err := ReapJournal(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not a journal") {
		t.Errorf("ReapJournal(%s) = %v, want 'not a journal' naming it", p, err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Error(err)
	}
}
