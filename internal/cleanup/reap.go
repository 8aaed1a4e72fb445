package cleanup

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Report says what Reap did, for the UI.
type Report struct {
	// Released has one line per resource of a dead build, newest first
	// within each journal: "unmounted /x", "detached /dev/loop3 (backing /y)".
	Released []string
	// Journals has one line per journal of a dead build that was handled.
	Journals []string
}

// Empty reports whether Reap found nothing to do.
func (r Report) Empty() bool { return len(r.Released) == 0 && len(r.Journals) == 0 }

// Reap releases what builds that died without cleaning up (kill -9, a
// crash, a power cut of the plugin process) still hold, and removes their
// journals. Journals of live builds, including this process's, are left
// alone. A resource that cannot be released keeps its journal for the
// next Reap; all such errors are returned together.
func Reap(stateDir string) (Report, error) {
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
			if err := reapJournal(path, &rep); err != nil {
				errs = append(errs, err)
			}
		case strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp"):
			// Open died before publishing it: no resource was taken yet.
			removeIfUnlocked(path)
		}
	}
	return rep, errors.Join(errs...)
}

func reapJournal(path string, rep *Report) error {
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
			return nil
		}
		return fmt.Errorf("cleanup: locking journal %s: %w", path, err)
	}
	if !sameFile(f, path) {
		return nil // another reaper removed it between our open and our lock
	}

	hdr, entries, err := readJournal(f)
	if err != nil {
		return fmt.Errorf("cleanup: journal %s: %w", path, err)
	}
	if hdr.PID == 0 {
		return fmt.Errorf("cleanup: journal %s has no header; left alone", path)
	}
	if alive(hdr.PID, hdr.Start) {
		return nil // an owner that closed its journal with errors but still runs
	}

	var errs []error
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i].entry
		if err := e.validate(); err != nil { // a damaged journal must not unmount / or kill everything
			errs = append(errs, fmt.Errorf("cleanup: journal %s: %w", path, err))
			continue
		}
		msg, err := release(e, nil)
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

// readJournal returns the header and the entries still held, in take
// order. A torn last line (killed mid-write) is ignored: its record was
// never acknowledged, so its resource was never taken.
func readJournal(f *os.File) (record, []held, error) {
	var hdr record
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
		return hdr, nil, err
	}
	return hdr, taken, nil
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
