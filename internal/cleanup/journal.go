// Package cleanup journals every privileged resource a build holds (loop
// devices, mounts, processes in a chroot, temporary files, an image's files
// moved aside for the session) before it is taken, releases them in
// reverse order on success, failure, cancel and panic, and lets a later
// build reap what a killed one left behind.
//
// One journal file per build, <stateDir>/<id>.journal, JSON lines, fsync'd
// after every record. The owner holds an exclusive flock on it for its
// life; the header also names the owner by pid and start time, so the
// reaper never touches the journal of a live build.
package cleanup

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
)

const journalExt = ".journal"

// DefaultStateDir is $IMAGEFACTORY_STATE_DIR, else /run/imagefactory:
// /run is a tmpfs, so journals vanish at reboot together with the loop
// devices and mounts they describe.
func DefaultStateDir() string {
	if d := os.Getenv("IMAGEFACTORY_STATE_DIR"); d != "" {
		return d
	}
	return "/run/imagefactory"
}

// Handle names one taken resource of a Journal. The zero Handle is none.
type Handle uint64

// record is one JSON line of a journal.
type record struct {
	Op string `json:"op"` // "header", "take", "release" or "keep"

	// header
	PID     int       `json:"pid,omitempty"`
	Start   uint64    `json:"start,omitempty"` // field 22 of /proc/PID/stat
	Created time.Time `json:"created,omitzero"`
	Label   string    `json:"label,omitempty"`

	// take / release
	ID    Handle `json:"id,omitempty"`
	Entry *Entry `json:"entry,omitempty"`

	// keep: released after everything still held, in this order
	After []Entry `json:"after,omitempty"`
}

type held struct {
	id    Handle
	entry Entry
	dev   *loop.Device // set by AttachLoop: our open fd must go first
}

// Journal records what one build holds. Its methods are safe for
// concurrent use.
type Journal struct {
	mu     sync.Mutex
	path   string
	f      *os.File // append-only, flock'd
	next   Handle
	held   []held // in take order
	closed bool
	kept   bool // Keep ran: what is held is a later reap's
	log    func(string)
}

// Open creates a journal in stateDir. label is free-form (build name,
// output directory) and shows in the reaper's report.
func Open(stateDir, label string) (*Journal, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("cleanup: creating state directory %s: %w", stateDir, err)
	}
	pid := os.Getpid()
	start, err := procStart(pid)
	if err != nil {
		return nil, fmt.Errorf("cleanup: reading our own start time: %w", err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	id := fmt.Sprintf("%d-%s", pid, hex.EncodeToString(rnd[:]))
	// Written under a hidden name and renamed once locked and complete, so
	// a reaper never sees a journal without its header or its lock.
	tmp := filepath.Join(stateDir, "."+id+".tmp")
	final := filepath.Join(stateDir, id+journalExt)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cleanup: creating journal: %w", err)
	}
	j := &Journal{path: tmp, f: f}
	fail := func(err error) (*Journal, error) {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail(fmt.Errorf("cleanup: locking journal %s: %w", tmp, err))
	}
	if err := j.append(record{Op: "header", PID: pid, Start: start, Created: time.Now().UTC(), Label: label}); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(fmt.Errorf("cleanup: publishing journal %s: %w", final, err))
	}
	j.path = final
	syncDir(stateDir)
	return j, nil
}

// Path is the journal file.
func (j *Journal) Path() string { return j.path }

// SetLogger sets a function that receives one line per released resource
// ("unmounted /x"). Without one, nothing is logged.
func (j *Journal) SetLogger(f func(msg string)) {
	j.mu.Lock()
	j.log = f
	j.mu.Unlock()
}

// Take records e before the caller takes the resource. If taking it then
// fails, call Forget (or Release, which is harmless on a resource that is
// not there).
func (j *Journal) Take(e Entry) (Handle, error) {
	if err := e.validate(); err != nil {
		return 0, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.take(e)
}

func (j *Journal) take(e Entry) (Handle, error) {
	if j.closed {
		return 0, fmt.Errorf("cleanup: journal %s is closed; not taking %s", j.path, e)
	}
	j.next++
	id := j.next
	if err := j.append(record{Op: "take", ID: id, Entry: &e}); err != nil {
		return 0, err
	}
	j.held = append(j.held, held{id: id, entry: e})
	return id, nil
}

// AttachLoop attaches a loop device (see loop.AttachWith), journaling the
// device the kernel offers before binding it. Release of the handle
// detaches it; do not Detach the device yourself.
func (j *Journal) AttachLoop(o loop.AttachOpts) (*loop.Device, Handle, error) {
	var h Handle
	user := o.BeforeConfigure
	o.BeforeConfigure = func(p loop.Pending) error {
		if h != 0 { // an earlier candidate was taken by another process: not ours
			if err := j.Forget(h); err != nil {
				return err
			}
			h = 0
		}
		var err error
		h, err = j.Take(LoopEntry(p.Device, p.Backing, p.BackingIno, p.Offset))
		if err != nil {
			return err
		}
		if user != nil {
			return user(p)
		}
		return nil
	}
	dev, err := loop.AttachWith(o)
	if err != nil {
		if h != 0 {
			err = errors.Join(err, j.Forget(h))
		}
		return nil, 0, err
	}
	j.mu.Lock()
	for i := range j.held {
		if j.held[i].id == h {
			j.held[i].dev = dev
		}
	}
	j.mu.Unlock()
	return dev, h, nil
}

// Release gives the resource back now (unmount, detach, kill, remove) and
// records that. On error the resource stays held, for Teardown or the
// reaper to retry.
func (j *Journal) Release(h Handle) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	i, err := j.find(h)
	if err != nil {
		return err
	}
	return j.releaseAt(i)
}

// Forget records the resource as released without acting: the caller
// released it itself, or never managed to take it.
func (j *Journal) Forget(h Handle) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	i, err := j.find(h)
	if err != nil {
		return err
	}
	if err := j.append(record{Op: "release", ID: h}); err != nil {
		return err
	}
	j.held = append(j.held[:i], j.held[i+1:]...)
	return nil
}

// Teardown releases everything still held, newest first. It keeps going
// past errors and returns them all. After Keep it does nothing.
func (j *Journal) Teardown() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.kept {
		return nil
	}
	var errs []error
	for i := len(j.held) - 1; i >= 0; i-- {
		if err := j.releaseAt(i); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close tears down, then deletes the journal if everything was released.
// If something could not be released the journal stays, and a later
// build's Reap retries once this process has exited. Defer it right after
// Open: it is what makes failure, cancel and panic clean up.
func (j *Journal) Close() error {
	err := j.Teardown()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return err
	}
	j.closed = true
	if len(j.held) == 0 {
		if rerr := os.Remove(j.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("cleanup: removing journal: %w", rerr))
		}
	}
	if cerr := j.f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("cleanup: closing journal %s: %w", j.path, cerr))
	}
	return err
}

// Held lists what is still held, in take order.
func (j *Journal) Held() []Entry {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]Entry, 0, len(j.held))
	for _, hd := range j.held {
		out = append(out, hd.entry)
	}
	return out
}

// Closed reports whether Close or Keep has run: a build whose journal is
// still open when its steps are over skipped its cleanups
// (-on-error=abort).
func (j *Journal) Closed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.closed
}

// Keep hands everything still held to a later reap, untouched, for
// inspection (packer build -on-error=abort): it writes a keep record,
// turns this build's binfmt_misc shares into kept ones (a kept chroot
// still runs its foreign binaries after this process exits), drops this
// process's references to its loop devices (a mounted device stays bound
// through its mount, as after an exit) and closes the journal without
// releasing anything. Reap leaves a kept journal alone; ReapKept and
// ReapJournal release it, then the after entries in order (an output
// directory, removed only once the disk in it is detached). It returns
// what is kept, in take order.
func (j *Journal) Keep(after ...Entry) ([]Entry, error) {
	for _, e := range after {
		if err := e.validate(); err != nil {
			return nil, err
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil, fmt.Errorf("cleanup: journal %s is closed; nothing to keep", j.path)
	}
	var errs []error
	var kept []Entry
	for _, hd := range j.held {
		kept = append(kept, hd.entry)
		if hd.entry.Kind == KindBinfmt {
			errs = append(errs, keepBinfmtShare(hd.entry))
		}
	}
	if err := j.append(record{Op: "keep", After: after}); err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	for _, hd := range j.held {
		if hd.dev != nil {
			errs = append(errs, hd.dev.Close())
		}
	}
	j.closed, j.kept = true, true
	if err := j.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("cleanup: closing journal %s: %w", j.path, err))
	}
	return kept, errors.Join(errs...)
}

func (j *Journal) find(h Handle) (int, error) {
	for i := range j.held {
		if j.held[i].id == h {
			return i, nil
		}
	}
	return 0, fmt.Errorf("cleanup: handle %d is not held in journal %s", h, j.path)
}

// releaseAt releases held[i]; j.mu must be held.
func (j *Journal) releaseAt(i int) error {
	hd := j.held[i]
	msg, err := release(hd.entry, hd.dev)
	if err != nil {
		return err
	}
	if j.log != nil {
		j.log(msg)
	}
	if err := j.append(record{Op: "release", ID: hd.id}); err != nil {
		return err
	}
	j.held = append(j.held[:i], j.held[i+1:]...)
	return nil
}

// append writes one record as a single write and fsyncs it: a record the
// caller was told about survives a kill -9 right after.
func (j *Journal) append(r record) error {
	if j.closed {
		return fmt.Errorf("cleanup: journal %s is closed", j.path)
	}
	return appendRecord(j.f, j.path, r)
}

func appendRecord(f *os.File, name string, r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("cleanup: encoding journal record: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("cleanup: writing journal %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cleanup: syncing journal %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
