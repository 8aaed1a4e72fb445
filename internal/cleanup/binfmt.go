package cleanup

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// binfmt_misc (the kernel's Documentation/admin-guide/binfmt-misc.rst) is
// one table for the whole host, so a registration made for a build is
// shared by every build that runs binaries of that architecture at the
// same time. Each build's use is a share: a marker file, named by the
// build's pid and start time, under BinfmtState/users/<name>/, written
// and removed under BinfmtState/lock (flock). The last share out removes
// the registration, and the mount of binfmt_misc if a build made it.
const (
	// BinfmtMisc is where binfmt_misc is mounted.
	BinfmtMisc = "/proc/sys/fs/binfmt_misc"
	// BinfmtState holds the shares. It is host-wide on purpose, not under
	// a build's state directory (IMAGEFACTORY_STATE_DIR), which may differ
	// between builds that share one registration.
	BinfmtState = "/run/imagefactory/binfmt"
	// BinfmtPrefix starts the name of every registration builds make;
	// nothing else in binfmt_misc is ever removed.
	BinfmtPrefix = "imagefactory-"
)

// KindBinfmt: a share of a binfmt_misc registration (and of the mount of
// binfmt_misc when a build made it).
const KindBinfmt Kind = "binfmt"

// LockBinfmt takes the host-wide binfmt lock (blocking) and returns its
// release. Hold it while reading, registering or mounting; never while
// releasing a share (the release takes it itself).
func LockBinfmt() (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Join(BinfmtState, "users"), 0o700); err != nil {
		return nil, fmt.Errorf("cleanup: binfmt state %s: %w", BinfmtState, err)
	}
	f, err := os.OpenFile(filepath.Join(BinfmtState, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cleanup: binfmt lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("cleanup: binfmt lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// TakeBinfmt journals this build's share of the registration name (which
// must start with BinfmtPrefix), then records the share on the host. Call
// it with LockBinfmt held, before registering or mounting. Releasing the
// handle (or the reaper, after a kill) drops the share; when no share of a
// live build is left, the registration is removed, and binfmt_misc is
// unmounted if MarkBinfmtMount says a build mounted it and nothing else is
// registered there.
func (j *Journal) TakeBinfmt(name string) (Handle, error) {
	pid := os.Getpid()
	start, err := procStart(pid)
	if err != nil {
		return 0, fmt.Errorf("cleanup: reading our own start time: %w", err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	e := Entry{Kind: KindBinfmt, Path: BinfmtState, Name: name, PID: pid, PIDStart: start, Aside: fmt.Sprintf("%d-%d-%x", pid, start, rnd)}
	h, err := j.Take(e)
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(BinfmtState, "users", name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return h, fmt.Errorf("cleanup: binfmt share: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, e.Aside), nil, 0o600); err != nil {
		return h, fmt.Errorf("cleanup: binfmt share: %w", err)
	}
	return h, nil
}

// MarkBinfmtMount records, with LockBinfmt held and before the mount is
// made, that a build mounts binfmt_misc, so the last share out unmounts it.
func MarkBinfmtMount() error {
	return os.WriteFile(filepath.Join(BinfmtState, "mounted"), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600)
}

// BinfmtMounted reports whether binfmt_misc is mounted (its register file
// exists only then).
func BinfmtMounted() bool {
	_, err := os.Stat(filepath.Join(BinfmtMisc, "register"))
	return err == nil
}

func (e Entry) validateBinfmt() error {
	switch {
	case e.Path != BinfmtState:
		return fmt.Errorf("cleanup: binfmt entry with state %q, not %s", e.Path, BinfmtState)
	case !strings.HasPrefix(e.Name, BinfmtPrefix) || strings.ContainsAny(e.Name, "/:") || e.Name == BinfmtPrefix:
		return fmt.Errorf("cleanup: binfmt entry %q: only registrations named %s* are ours to remove", e.Name, BinfmtPrefix)
	case e.Aside == "" || strings.Contains(e.Aside, "/"):
		return fmt.Errorf("cleanup: binfmt entry %s has no share marker", e.Name)
	}
	return nil
}

// releaseBinfmt drops the entry's share and removes what no live share
// needs any more. Idempotent: a share already gone counts as dropped.
func releaseBinfmt(e Entry) (string, error) {
	unlock, err := LockBinfmt()
	if err != nil {
		return "", err
	}
	defer unlock()
	users := filepath.Join(BinfmtState, "users")
	for _, m := range []string{e.Aside, keptPrefix + e.Aside} {
		if err := os.Remove(filepath.Join(users, e.Name, m)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("cleanup: dropping binfmt share %s: %w", m, err)
		}
	}
	left, err := liveShares(users)
	if err != nil {
		return "", err
	}
	var did []string
	if left[e.Name] == 0 {
		entry := filepath.Join(BinfmtMisc, e.Name)
		if _, err := os.Stat(entry); err == nil {
			// Writing -1 to an entry removes it (binfmt-misc.rst).
			if err := os.WriteFile(entry, []byte("-1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("cleanup: removing binfmt_misc registration %s: %w", e.Name, err)
			}
			did = append(did, "removed binfmt_misc registration "+e.Name)
		}
		os.Remove(filepath.Join(users, e.Name))
	}
	total := 0
	for _, n := range left {
		total += n
	}
	mark := filepath.Join(BinfmtState, "mounted")
	if _, err := os.Stat(mark); total == 0 && err == nil {
		if BinfmtMounted() {
			others, err := binfmtEntries()
			if err != nil {
				return "", err
			}
			if len(others) > 0 {
				// Someone registered meanwhile: the mount is theirs now.
				did = append(did, fmt.Sprintf("left %s mounted: it holds %s", BinfmtMisc, strings.Join(others, ", ")))
			} else {
				if err := unix.Unmount(BinfmtMisc, 0); err != nil {
					return "", fmt.Errorf("cleanup: unmounting %s: %w", BinfmtMisc, err)
				}
				did = append(did, "unmounted "+BinfmtMisc)
				os.Remove(mark)
			}
		} else {
			os.Remove(mark)
		}
	}
	if len(did) == 0 {
		return fmt.Sprintf("dropped a share of binfmt_misc registration %s (still used by %d build(s))", e.Name, left[e.Name]), nil
	}
	return strings.Join(did, "; "), nil
}

// liveShares counts the shares of live builds per registration name,
// removing those of dead ones (a build killed before the reaper ran).
func liveShares(users string) (map[string]int, error) {
	left := map[string]int{}
	names, err := os.ReadDir(users)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cleanup: reading binfmt shares: %w", err)
	}
	for _, n := range names {
		marks, _ := os.ReadDir(filepath.Join(users, n.Name()))
		for _, m := range marks {
			if strings.HasPrefix(m.Name(), keptPrefix) {
				left[n.Name()]++ // an aborted build's, until its reap
				continue
			}
			var pid int
			var start uint64
			if _, err := fmt.Sscanf(m.Name(), "%d-%d-", &pid, &start); err == nil && alive(pid, start) {
				left[n.Name()]++
				continue
			}
			os.Remove(filepath.Join(users, n.Name(), m.Name()))
		}
	}
	return left, nil
}

// keptPrefix starts the marker of a share that Keep handed to a later
// reap: it counts as live although its build has exited.
const keptPrefix = "kept-"

// keepBinfmtShare renames e's share marker to a kept one.
func keepBinfmtShare(e Entry) error {
	unlock, err := LockBinfmt()
	if err != nil {
		return err
	}
	defer unlock()
	dir := filepath.Join(BinfmtState, "users", e.Name)
	if err := os.Rename(filepath.Join(dir, e.Aside), filepath.Join(dir, keptPrefix+e.Aside)); err != nil {
		return fmt.Errorf("cleanup: keeping binfmt share %s: %w", e.Aside, err)
	}
	return nil
}

// binfmtEntries lists the registrations in binfmt_misc (not register and
// status, the control files).
func binfmtEntries() ([]string, error) {
	ents, err := os.ReadDir(BinfmtMisc)
	if err != nil {
		return nil, fmt.Errorf("cleanup: reading %s: %w", BinfmtMisc, err)
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); n != "register" && n != "status" {
			out = append(out, n)
		}
	}
	return out, nil
}
