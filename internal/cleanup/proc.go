package cleanup

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func releaseChroot(e Entry) (string, error) {
	killed, err := killRooted(e.Path, 2*time.Second)
	if err != nil {
		return "", err
	}
	if len(killed) == 0 {
		return fmt.Sprintf("no process left rooted in %s", e.Path), nil
	}
	return fmt.Sprintf("killed %s rooted in %s (pids %s)", processes(len(killed)), e.Path, joinInts(killed)), nil
}

// releaseProc ends the process the entry names, if it still runs: SIGTERM,
// up to 3 s to exit, then SIGKILL. A pid now owned by another process (a
// different start time) is left alone.
func releaseProc(e Entry) (string, error) {
	if gone(e.PID, e.PIDStart) {
		return fmt.Sprintf("process %d (%s) already exited", e.PID, e.Path), nil
	}
	sig := unix.SIGTERM
	deadline := time.Now().Add(3 * time.Second)
	unix.Kill(e.PID, sig)
	for !gone(e.PID, e.PIDStart) {
		if time.Now().After(deadline) {
			if sig == unix.SIGKILL {
				return "", fmt.Errorf("cleanup: process %d (%s) still runs after SIGKILL", e.PID, e.Path)
			}
			sig, deadline = unix.SIGKILL, time.Now().Add(3*time.Second)
			unix.Kill(e.PID, sig)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if sig == unix.SIGKILL {
		return fmt.Sprintf("killed process %d (%s) with SIGKILL", e.PID, e.Path), nil
	}
	return fmt.Sprintf("stopped process %d (%s)", e.PID, e.Path), nil
}

// gone reports whether the process pid that started at start has exited
// (a zombie has: it holds nothing, and its parent will reap it).
func gone(pid int, start uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	if s[i+2] == 'Z' {
		return true
	}
	got, err := procStart(pid)
	return err == nil && got != start
}

// killRooted ends every process whose root directory is dir or below it:
// SIGTERM, up to grace to exit, then SIGKILL. This catches daemons that a
// provisioner started in the chroot and that outlived it. Never our own pid.
func killRooted(dir string, grace time.Duration) ([]int, error) {
	if dir == "/" {
		return nil, fmt.Errorf("cleanup: refusing to kill every process rooted in /")
	}
	signalled := map[int]bool{}
	deadline := time.Now().Add(grace)
	sig := unix.SIGTERM
	for {
		pids := rootedPids(dir)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			if sig == unix.SIGKILL {
				return sortedKeys(signalled), fmt.Errorf("cleanup: processes %s still rooted in %s after SIGKILL", joinInts(pids), dir)
			}
			sig, deadline = unix.SIGKILL, time.Now().Add(2*time.Second)
			for _, p := range pids {
				unix.Kill(p, sig)
			}
		}
		for _, p := range pids {
			if !signalled[p] { // also catches children forked during the grace period
				signalled[p] = true
				unix.Kill(p, sig)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return sortedKeys(signalled), nil
}

// rootedPids lists live processes whose /proc/PID/root is dir or below,
// or is dir's very directory seen from another mount namespace: a
// sandbox's processes, whose root was moved there with pivot_root(2),
// read as "/" in the link (the path in their namespace), so their root's
// device and inode are compared too. Zombies have no root link and are
// skipped: they hold nothing.
func rootedPids(dir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var dirSt unix.Stat_t
	haveDir := unix.Stat(dir, &dirSt) == nil
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		root, err := os.Readlink("/proc/" + e.Name() + "/root")
		if err != nil {
			continue
		}
		root = strings.TrimSuffix(root, " (deleted)")
		var st unix.Stat_t
		if under(root, dir) || haveDir && unix.Stat("/proc/"+e.Name()+"/root", &st) == nil && st.Dev == dirSt.Dev && st.Ino == dirSt.Ino {
			out = append(out, pid)
		}
	}
	return out
}

// procStart returns field 22 of /proc/PID/stat (start time in clock ticks
// since boot): with the pid it names a process even across pid reuse.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // comm may contain spaces and ')'
	if i < 0 {
		return 0, fmt.Errorf("cleanup: malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("cleanup: malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// alive reports whether the process pid that started at start still runs.
func alive(pid int, start uint64) bool {
	got, err := procStart(pid)
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) && pid > 0 // unreadable: assume alive, never reap a live build
	}
	return got == start
}

func sortedKeys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// CloseInheritedFDs marks every descriptor of this process from 3 up
// close-on-exec, so that a process it starts next holds only what it is
// given. Call it before starting a process that may outlive the build
// (QEMU, qemu-storage-daemon: the journal's, until a reaper ends them).
// Packer's panicwrap hands the real packer its stdin, stdout and stderr as
// descriptors 3-5 without close-on-exec (mitchellh/panicwrap: ExtraFiles),
// plugins inherit them, and so would such a process: after a kill -9 of
// the build it kept the terminal's or the CI job's output pipe open, and
// whatever read it hung. Go's own descriptors are close-on-exec already,
// and exec.Cmd's ExtraFiles are passed regardless.
func CloseInheritedFDs() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	// Kernels before 5.11: each descriptor /proc lists.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
	return nil
}

// processes is "1 process", "2 processes".
func processes(n int) string {
	if n == 1 {
		return "1 process"
	}
	return fmt.Sprintf("%d processes", n)
}
