package cleanup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
)

// Kind names what an Entry holds.
type Kind string

const (
	KindLoop   Kind = "loop"    // a loop device bound to a backing file
	KindMount  Kind = "mount"   // a mount point
	KindChroot Kind = "chroot"  // processes whose root is in a directory
	KindFile   Kind = "file"    // a temporary file or directory
	KindDir    Kind = "dir"     // a directory, removed once empty
	KindProc   Kind = "process" // one process (a virtual machine), by pid and start time
	KindMoved  Kind = "moved"   // a file of an image moved aside for the session
	KindCgroup Kind = "cgroup"  // a sandbox's cgroup v2 cgroup (its device allow-list), with its processes
	// KindBinfmt (binfmt.go): a share of a binfmt_misc registration
)

// Entry is one privileged resource, as written to the journal. Build it
// with LoopEntry, MountEntry, ChrootEntry, FileEntry, ProcessEntry or
// MovedEntry.
type Entry struct {
	Kind Kind   `json:"kind"`
	Path string `json:"path"` // loop: device; mount: target; chroot: root; file: path; moved: image root; binfmt: BinfmtState

	// loop
	Backing    string `json:"backing,omitempty"`
	BackingIno uint64 `json:"backing_ino,omitempty"`
	Offset     int64  `json:"offset,omitempty"`

	// process: the pid with its start time (field 22 of /proc/PID/stat)
	// names it even after the pid is reused
	PID      int    `json:"pid,omitempty"`
	PIDStart uint64 `json:"pid_start,omitempty"`

	// mount (for messages only)
	Source string `json:"source,omitempty"`
	FSType string `json:"fstype,omitempty"`

	// moved: the file's path inside the image, where it stands meanwhile,
	// and its device and inode (what names it after the rename); binfmt:
	// the registration's name and the share's marker (PID, PIDStart: the
	// build's)
	Name  string `json:"name,omitempty"`
	Aside string `json:"aside,omitempty"`
	Dev   uint64 `json:"dev,omitempty"`
	Ino   uint64 `json:"ino,omitempty"`
}

// LoopEntry records a loop device bound to backing (inode ino) at offset.
// Journal.AttachLoop builds it for you.
func LoopEntry(device, backing string, ino uint64, offset int64) Entry {
	return Entry{Kind: KindLoop, Path: device, Backing: backing, BackingIno: ino, Offset: offset}
}

// MountEntry records a mount on target. The target must exist: it is
// resolved now, as /proc/self/mountinfo will show it resolved.
func MountEntry(target, source, fstype string) Entry {
	return Entry{Kind: KindMount, Path: canonical(target), Source: source, FSType: fstype}
}

// ChrootEntry records that processes will run with their root at root (or
// below it); releasing it kills them all. Take it before starting the
// first one.
func ChrootEntry(root string) Entry {
	return Entry{Kind: KindChroot, Path: canonical(root)}
}

// CgroupEntry records a chroot sandbox's cgroup (dir, from
// CgroupDir): releasing it kills the processes in it and removes
// it (RemoveCgroup). Take it before making the cgroup: a build
// killed with -9 leaves it, empty (the sandbox's init dies with the
// build), for the next build's reaper.
func CgroupEntry(dir string) Entry {
	return Entry{Kind: KindCgroup, Path: canonical(dir)}
}

// FileEntry records a temporary file or directory to remove. A directory
// is removed with its contents, but never while anything is mounted in it.
func FileEntry(path string) Entry {
	return Entry{Kind: KindFile, Path: canonical(path)}
}

// DirEntry records a directory to remove once it is empty, as the
// output directory of an aborted build (Journal.Keep): releasing it
// removes it only when nothing is left in it, else leaves it and says so.
func DirEntry(path string) Entry {
	return Entry{Kind: KindDir, Path: canonical(path)}
}

// ProcessEntry records a running process, such as a QEMU, that must not
// outlive the build. path names what it works on (its disk), for messages.
// Releasing it sends SIGTERM, then SIGKILL. Take it right after the start.
func ProcessEntry(path string, pid int) (Entry, error) {
	start, err := procStart(pid)
	if err != nil {
		return Entry{}, fmt.Errorf("cleanup: process %d: %w", pid, err)
	}
	return Entry{Kind: KindProc, Path: canonical(path), PID: pid, PIDStart: start}, nil
}

// canonical makes p absolute and resolves symlinks where it exists, so it
// compares equal to what the kernel reports in /proc.
func canonical(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		p = a
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return p
}

func (e Entry) String() string {
	switch e.Kind {
	case KindLoop:
		return fmt.Sprintf("loop %s (backing %s, offset %d)", e.Path, e.Backing, e.Offset)
	case KindMount:
		return fmt.Sprintf("mount %s (%s %s)", e.Path, e.FSType, e.Source)
	case KindProc:
		return fmt.Sprintf("process %d (%s)", e.PID, e.Path)
	case KindMoved:
		return fmt.Sprintf("moved %s%s (aside at %s)", e.Path, e.Name, e.Aside)
	case KindBinfmt:
		return fmt.Sprintf("binfmt_misc registration %s (share %s)", e.Name, e.Aside)
	default:
		return fmt.Sprintf("%s %s", e.Kind, e.Path)
	}
}

func (e Entry) validate() error {
	if !filepath.IsAbs(e.Path) {
		return fmt.Errorf("cleanup: %s: path %q is not absolute", e.Kind, e.Path)
	}
	switch e.Kind {
	case KindLoop:
		if e.BackingIno == 0 || e.Backing == "" {
			return fmt.Errorf("cleanup: loop entry %s has no backing file/inode: the reaper could not tell it from a reused device", e.Path)
		}
	case KindMount, KindFile, KindDir:
		if filepath.Clean(e.Path) == "/" {
			return fmt.Errorf("cleanup: refusing a %s entry for /", e.Kind)
		}
	case KindChroot:
		if filepath.Clean(e.Path) == "/" {
			return fmt.Errorf("cleanup: refusing a chroot entry for /: releasing it would kill every process")
		}
	case KindProc:
		if e.PID <= 1 || e.PIDStart == 0 {
			return fmt.Errorf("cleanup: process entry for %s has no pid and start time: the reaper could not tell it from a reused pid", e.Path)
		}
		if e.PID == os.Getpid() {
			return fmt.Errorf("cleanup: refusing a process entry for this process")
		}
	case KindCgroup:
		if !strings.HasPrefix(filepath.Base(e.Path), CgroupPrefix) {
			return fmt.Errorf("cleanup: refusing a cgroup entry for %s: not a sandbox's cgroup (%s...)", e.Path, CgroupPrefix)
		}
	case KindMoved:
		return e.validateMoved()
	case KindBinfmt:
		return e.validateBinfmt()
	default:
		return fmt.Errorf("cleanup: unknown entry kind %q for %s", e.Kind, e.Path)
	}
	return nil
}

// release gives the resource back. It is idempotent: a resource that is
// already gone (or was never taken, when the process died between the
// journal write and the take) counts as released. The message says what
// happened, for the UI.
func release(e Entry, dev *loop.Device) (string, error) {
	switch e.Kind {
	case KindLoop:
		return releaseLoop(e, dev)
	case KindMount:
		return releaseMount(e)
	case KindChroot:
		return releaseChroot(e)
	case KindFile:
		return releaseFile(e)
	case KindDir:
		return releaseDir(e)
	case KindProc:
		return releaseProc(e)
	case KindMoved:
		return releaseMoved(e)
	case KindCgroup:
		return releaseCgroup(e)
	case KindBinfmt:
		return releaseBinfmt(e)
	}
	return "", fmt.Errorf("cleanup: unknown entry kind %q for %s", e.Kind, e.Path)
}

func releaseLoop(e Entry, dev *loop.Device) (string, error) {
	if dev != nil { // ours, still open in this process
		if err := dev.Detach(); err != nil {
			return "", err
		}
		return fmt.Sprintf("detached %s (backing %s)", e.Path, e.Backing), nil
	}
	ok, err := loop.DetachIfBacking(e.Path, e.Backing, e.BackingIno, e.Offset)
	if err != nil {
		return "", err
	}
	if ok {
		return fmt.Sprintf("detached %s (backing %s)", e.Path, e.Backing), nil
	}
	if s, err := loop.Info(e.Path); err == nil {
		return fmt.Sprintf("%s (backing %s) already free; it now belongs to %s, left alone", e.Path, e.Backing, s.Backing), nil
	}
	return fmt.Sprintf("%s (backing %s) is free: the kernel detached it when its last user went", e.Path, e.Backing), nil
}

func releaseCgroup(e Entry) (string, error) {
	killed, err := RemoveCgroup(e.Path)
	if err != nil {
		return "", err
	}
	if killed > 0 {
		return fmt.Sprintf("removed cgroup %s, killing %s in it", e.Path, processes(killed)), nil
	}
	return fmt.Sprintf("removed cgroup %s", e.Path), nil
}

func releaseFile(e Entry) (string, error) {
	if _, err := os.Lstat(e.Path); errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("%s already removed", e.Path), nil
	}

	// RemoveAll would walk into a filesystem still mounted below the path
	// (an image's root!) and empty it.
	mps, err := mountPointsUnder(e.Path)
	if err != nil {
		return "", err
	}
	if len(mps) > 0 {
		return "", fmt.Errorf("cleanup: not removing %s: %s is still mounted there", e.Path, mps[0])
	}
	if err := os.RemoveAll(e.Path); err != nil {
		return "", fmt.Errorf("cleanup: removing %s: %w", e.Path, err)
	}
	return fmt.Sprintf("removed %s", e.Path), nil
}

func releaseDir(e Entry) (string, error) {
	err := os.Remove(e.Path)
	switch {
	case err == nil:
		return fmt.Sprintf("removed %s", e.Path), nil
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("%s already removed", e.Path), nil
	case errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, syscall.EEXIST):
		return fmt.Sprintf("left %s: it holds files the build did not make", e.Path), nil
	}
	return "", fmt.Errorf("cleanup: removing %s: %w", e.Path, err)
}
