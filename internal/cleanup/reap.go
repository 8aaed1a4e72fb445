package cleanup

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Report says what Reap did, for the UI.
type Report struct {
	// Released has one line per resource of a dead build, newest first
	// within each journal: "unmounted /x", "detached /dev/loop3 (backing /y)".
	Released []string
	// Journals has one line per journal of a dead build that was handled.
	Journals []string
	// Kept lists the journals kept for inspection (Journal.Keep) that Reap
	// left alone.
	Kept []Kept
	// Live has one line per journal left alone because its build runs.
	Live []string
}

// Kept describes a journal kept for inspection.
type Kept struct {
	Journal string // the journal file
	Label   string // the build's label (Open)
	Created time.Time
	Mounts  []string // mount points it holds, in take order: the root first
	Files   []string // files and directories its reap removes
}

// Holds reports whether the kept build holds path: a file it removes or
// a mount at path or below it, or a mount above it.
func (k Kept) Holds(path string) bool {
	p := canonical(path)
	for _, f := range k.Files {
		if under(f, p) {
			return true
		}
	}
	for _, m := range k.Mounts {
		if under(m, p) || under(p, m) {
			return true
		}
	}
	return false
}

// Empty reports whether Reap found nothing to do.
func (r Report) Empty() bool { return len(r.Released) == 0 && len(r.Journals) == 0 }

// ErrLive says a journal belongs to a build that still runs.
var ErrLive = errors.New("its build is still running")

// Reap releases what builds that died without cleaning up (kill -9, a
// crash, a power cut of the plugin process) still hold, and removes their
// journals. Journals of live builds, including this process's, are left
// alone, and so are journals kept for inspection (listed in Report.Kept).
// A resource that cannot be released keeps its journal for the next Reap;
// all such errors are returned together.
func Reap(stateDir string) (Report, error) { return reapDir(stateDir, false) }

// ReapKept is Reap that releases the journals kept for inspection too.
func ReapKept(stateDir string) (Report, error) { return reapDir(stateDir, true) }

// ReapJournal releases what the journal at path holds, kept for
// inspection or left by a build that died, and removes it. Errors: no
// journal there (fs.ErrNotExist), not a journal, ErrLive (wrapped) for a
// running build's, and what could not be released (the journal then stays).
func ReapJournal(path string) (Report, error) {
	var rep Report
	if !strings.HasSuffix(path, journalExt) {
		return rep, fmt.Errorf("cleanup: %s is not a journal (its name ends in %s)", path, journalExt)
	}
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("cleanup: journal %s: %w", path, err)
	}
	n := len(rep.Live)
	err := reapJournal(path, &rep, true)
	if err == nil && len(rep.Live) > n {
		err = fmt.Errorf("cleanup: journal %s: %w (%s); it is released when that build ends", path, ErrLive, rep.Live[n])
	}
	return rep, err
}

func reapDir(stateDir string, kept bool) (Report, error) {
	var rep Report
	ents, err := os.ReadDir(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("cleanup: reading state directory %s: %w", stateDir, err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(stateDir, name)
		switch {
		case strings.HasSuffix(name, journalExt):
			if err := reapJournal(path, &rep, kept); err != nil {
				errs = append(errs, err)
			}
		case strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp"):
			// Open died before publishing it: no resource was taken yet.
			removeIfUnlocked(path)
		}
	}
	return rep, errors.Join(errs...)
}

// reapJournal releases one journal of a dead build, and one kept for
// inspection if kept is set; it leaves a live build's alone (listed in
// rep.Live) and a kept one otherwise (rep.Kept).
func reapJournal(path string, rep *Report, kept bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // reaped or closed meanwhile
	}
	if err != nil {
		return fmt.Errorf("cleanup: opening journal %s: %w", path, err)
	}
	defer f.Close()
	// The owner holds the lock for its life, and so does a concurrent
	// reaper: either way, not ours.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			rep.Live = append(rep.Live, path+" is locked by its running build or by another reaper")
			return nil
		}
		return fmt.Errorf("cleanup: locking journal %s: %w", path, err)
	}
	if !sameFile(f, path) {
		return nil // another reaper removed it between our open and our lock
	}

	hdr, entries, keep, err := readJournal(f)
	if err != nil {
		return fmt.Errorf("cleanup: journal %s: %w", path, err)
	}
	if hdr.PID == 0 {
		return fmt.Errorf("cleanup: journal %s has no header; left alone", path)
	}
	if keep != nil && !kept {
		k := Kept{Journal: path, Label: hdr.Label, Created: hdr.Created}
		for _, e := range entries {
			switch e.entry.Kind {
			case KindMount:
				k.Mounts = append(k.Mounts, e.entry.Path)
			case KindFile:
				k.Files = append(k.Files, e.entry.Path)
			}
		}
		for _, e := range keep.After {
			k.Files = append(k.Files, e.Path)
		}
		rep.Kept = append(rep.Kept, k)
		return nil
	}
	// A kept journal was handed over: its owner, even while it still
	// exits, touches nothing of it any more.
	if keep == nil && alive(hdr.PID, hdr.Start) {
		// An owner that closed its journal with errors but still runs.
		rep.Live = append(rep.Live, fmt.Sprintf("%s belongs to pid %d, still running", path, hdr.PID))
		return nil
	}

	var errs []error
	for _, i := range reapOrder(entries) {
		msg, err := releaseChecked(path, entries[i].entry)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Released = append(rep.Released, msg)
		// Recorded so a rerun after a partial failure does not redo it.
		if err := appendRecord(f, path, record{Op: "release", ID: entries[i].id}); err != nil {
			errs = append(errs, err)
		}
	}
	if keep != nil && len(errs) == 0 {
		// Only once nothing is held: the output directory holds the disk.
		for _, e := range keep.After {
			msg, err := releaseChecked(path, e)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			rep.Released = append(rep.Released, msg)
		}
	}
	desc := fmt.Sprintf("%s (%q, pid %d, created %s)", path, hdr.Label, hdr.PID, hdr.Created.Local().Format("2006-01-02 15:04:05"))
	if len(errs) > 0 {
		rep.Journals = append(rep.Journals, "kept "+desc+": some resources could not be released")
		return errors.Join(errs...)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cleanup: removing reaped journal %s: %w", path, err)
	}
	rep.Journals = append(rep.Journals, "reaped "+desc)
	return nil
}

// reapOrder is the order in which the reaper releases entries (indexes):
// the processes running in a chroot first, since a chroot is journaled
// before its mounts and a daemon holding /dev open would make its unmount
// lazy; then the sandboxes' cgroups, emptied by then (what is left in one
// is killed); then everything newest first.
func reapOrder(entries []held) []int {
	var first, cgroups, rest []int
	for i := len(entries) - 1; i >= 0; i-- {
		switch entries[i].entry.Kind {
		case KindChroot:
			first = append(first, i)
		case KindCgroup:
			cgroups = append(cgroups, i)
		default:
			rest = append(rest, i)
		}
	}
	return append(append(first, cgroups...), rest...)
}

// releaseChecked releases an entry read from the journal at path, once
// it is valid: a damaged journal must not unmount / or kill everything.
func releaseChecked(path string, e Entry) (string, error) {
	if err := e.validate(); err != nil {
		return "", fmt.Errorf("cleanup: journal %s: %w", path, err)
	}
	return release(e, nil)
}

// readJournal returns the header, the entries still held, in take order,
// and the keep record if there is one. A torn last line (killed
// mid-write) is ignored: its record was never acknowledged, so its
// resource was never taken.
func readJournal(f *os.File) (record, []held, *record, error) {
	var hdr record
	var keep *record
	var taken []held
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		switch r.Op {
		case "header":
			hdr = r
		case "keep":
			keep = &r
		case "take":
			if r.Entry != nil {
				taken = append(taken, held{id: r.ID, entry: *r.Entry})
			}
		case "release":
			for i := range taken {
				if taken[i].id == r.ID {
					taken = append(taken[:i], taken[i+1:]...)
					break
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return hdr, nil, nil, err
	}
	return hdr, taken, keep, nil
}

func sameFile(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

func removeIfUnlocked(path string) {
	// Named .<pid>-<random>.tmp: while that pid runs, Open may be between
	// creating the file and locking it.
	var pid int
	if _, err := fmt.Sscanf(filepath.Base(path), ".%d-", &pid); err != nil || pid <= 0 {
		return
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && sameFile(f, path) {
		os.Remove(path)
	}
}
