package cleanup

// cgroup.go: a chroot sandbox's cgroup (internal/sandbox devices.go makes
// it), released by killing what is in it and removing it.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
)

// CgroupPrefix begins the name of every cgroup a sandbox makes; only
// cgroups so named are removed.
const CgroupPrefix = "imagefactory-sandbox-"

// CgroupInner is the child cgroup a sandbox's processes live in.
const CgroupInner = "chroot"

// CgroupDir is where a sandbox cgroup named CgroupPrefix+name goes (name:
// "PID-N", PID the build's process, so that LeftCgroups can tell a
// running build's from a killed one's): under
// this process's own cgroup in the cgroup v2 hierarchy (the "0::" line of
// /proc/self/cgroup, on the cgroup2 mount /proc/self/mountinfo shows; on a
// hybrid host that is /sys/fs/cgroup/unified). It is an error when no
// cgroup2 filesystem is mounted.
func CgroupDir(name string) (string, error) {
	mnt, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	own := ""
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			own = p
		}
	}
	if own == "" || strings.Contains(own, "(deleted)") {
		return "", fmt.Errorf("cleanup: /proc/self/cgroup has no cgroup v2 line: %q", b)
	}
	return filepath.Join(mnt, own, CgroupPrefix+name), nil
}

// cgroup2Mount is the mount point of the first cgroup2 filesystem in
// /proc/self/mountinfo (proc(5): field 5 the mount point, the filesystem
// type after the " - " separator).
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		fields := strings.Fields(l)
		_, after, ok := strings.Cut(l, " - ")
		if ok && len(fields) > 4 && strings.HasPrefix(after, "cgroup2 ") {
			return fstab.Unescape(fields[4]), nil
		}
	}
	return "", errors.New("cleanup: no cgroup2 filesystem is mounted (the device allow-list needs cgroup v2)")
}

// RemoveCgroup kills every process in cgroup dir and its children
// (cgroup.kill, Linux 5.14; SIGKILL by cgroup.procs before), waits up to
// 5 s for them to go, and removes the cgroups, children first. Only a
// cgroup v2 directory named CgroupPrefix... is touched; one already gone
// counts as removed. It returns how many processes it killed.
func RemoveCgroup(dir string) (int, error) {
	if !strings.HasPrefix(filepath.Base(dir), CgroupPrefix) {
		return 0, fmt.Errorf("cleanup: not removing cgroup %s: its name does not begin with %s", dir, CgroupPrefix)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); errors.Is(err, unix.ENOENT) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("cleanup: not removing %s: not a cgroup v2 directory", dir)
	}
	dirs := []string{filepath.Join(dir, CgroupInner), dir} // children first
	killed := 0
	for _, d := range dirs {
		killed += len(cgroupProcs(d))
	}
	if killed > 0 {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
			for _, d := range dirs {
				for _, pid := range cgroupProcs(d) {
					unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, d := range dirs {
		for {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				return killed, fmt.Errorf("cleanup: removing cgroup %s: %w (processes %v)", d, err, cgroupProcs(d))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return killed, nil
}

// cgroupProcs are the PIDs in cgroup dir's cgroup.procs.
func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// LeftCgroups lists the sandbox cgroups under this process's own (where
// CgroupDir puts them) whose build process, the PID their name begins
// with, no longer runs: what a build killed with -9 leaves until the
// next build's reaper removes them. For tests' leak checks.
func LeftCgroups() ([]string, error) {
	dir, err := CgroupDir("")
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), CgroupPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		if _, err := os.Stat("/proc/" + pid); err != nil {
			out = append(out, filepath.Join(filepath.Dir(dir), e.Name()))
		}
	}
	return out, nil
}
