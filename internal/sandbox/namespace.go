package sandbox

// namespace.go: the chroot's own mount, PID and IPC namespaces, held by a
// first process (init.go), entered by each command with nsenter(1), and
// every process left in them named and stopped at the end.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Sandbox is one running set of namespaces whose root is an image root.
type Sandbox struct {
	root  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader // init's stdout
	pidNS string        // readlink of the init's /proc/PID/ns/pid
	mntNS string        // and of its ns/mnt
	cg    *Cgroup       // nil: no device allow-list
	done  chan struct{}
	kept  bool
}

// userHZ is the unit of /proc/PID/stat's start time: USER_HZ, 100 on
// every Linux architecture (proc(5), "clock ticks"; times(2)).
const userHZ = 100

// Start starts the sandbox of root (a host directory holding the mounted
// image, its chroot mounts already made): exe (the binary that calls
// IsInit/RunInit; "" for this one) runs as PID 1 of new mount, PID, IPC
// and cgroup namespaces. With cg (may be nil), init starts in cg's
// cgroup, which becomes the root of its cgroup namespace: it and the
// commands started with ProcAttr can open only cg's devices. Before, root and every mount beneath it are made shared on
// the host, so that mounts the host makes there later (the elements
// provisioner's outside phases, post_mount_commands, a user's binds)
// propagate into the namespace, which sees them as a slave. The
// namespace dies with the build process, even after a SIGKILL: init ends
// when its stdin closes, and Pdeathsig kills it when the thread that
// started it ends.
func Start(root, exe string, cg *Cgroup) (*Sandbox, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("sandbox: finding this program: %w", err)
		}
	}
	// As /proc/self/mountinfo and /proc/PID/root show it.
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	if real, err := filepath.EvalSymlinks(root); err == nil {
		root = real
	}
	if err := ensureShared(root); err != nil {
		return nil, err
	}
	// A descriptor this process inherited without close-on-exec (Packer's
	// panicwrap hands plugins its 3-5) would stay open in init, and a
	// chroot process reads /proc/1/fd.
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return nil, fmt.Errorf("sandbox: marking inherited descriptors close-on-exec: %w", err)
	}
	cmd := exec.Command(exe, InitCommand, root)
	// Go 1.25's runtime keeps the cgroup's CPU limit files open to follow
	// them (GOMAXPROCS): host files in /proc/1/fd. Init needs no limit.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GODEBUG=containermaxprocs=0,updatemaxprocs=0"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// CLONE_NEWCGROUP with CLONE_INTO_CGROUP: the namespace's root
		// is the cgroup the child starts in (kernel/cgroup/cgroup.c,
		// cgroup_post_fork).
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWCGROUP,
		// Go's check after setting it (getppid() != the parent's pid:
		// kill itself) sees 0 in a new PID namespace; PID 1 ignores that
		// SIGKILL from itself, the kernel's own on the parent's death not.
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true, // a Ctrl-C to Packer's group does not reach it
	}
	if cg != nil {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, cg.FD()
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sandbox: starting %s %s: %w", exe, InitCommand, err)
	}
	s := &Sandbox{root: root, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), cg: cg, done: make(chan struct{})}
	line, _ := s.out.ReadString('\n')
	if strings.TrimSpace(line) != readyLine {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		msg := strings.TrimSpace(line + stderr.String())
		if msg == "" {
			msg = "it exited before it was ready"
		}
		return nil, fmt.Errorf("sandbox for %s: %s", root, msg)
	}
	go func() { cmd.Wait(); close(s.done) }()
	pid := cmd.Process.Pid
	if s.pidNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil {
		s.mntNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	}
	if err != nil {
		s.kill()
		return nil, fmt.Errorf("sandbox: reading its namespaces: %w", err)
	}
	return s, nil
}

// InitPID is the host PID of the sandbox's first process.
func (s *Sandbox) InitPID() int { return s.cmd.Process.Pid }

// Root is the image root the sandbox runs in (a host path).
func (s *Sandbox) Root() string { return s.root }

// ProcAttr sets attr (the SysProcAttr of the process that runs
// EnterArgs, or of a shell or command_wrapper around it) to start in the
// sandbox's device cgroup, if it has one. Every command must: nsenter
// joins namespaces, not cgroups.
func (s *Sandbox) ProcAttr(attr *syscall.SysProcAttr) {
	if s.cg != nil {
		attr.UseCgroupFD, attr.CgroupFD = true, s.cg.FD()
	}
}

// EnterArgs is the command line that runs argv in the sandbox: in its
// mount, PID, IPC and cgroup namespaces, with its root (the image) and working
// directory (its /), through util-linux nsenter(1), which forks once in
// the PID namespace and exits with the command's status. Go cannot do it
// itself: setns(2) of a mount namespace refuses a multithreaded process.
func (s *Sandbox) EnterArgs(argv ...string) []string { return EnterArgs(s.InitPID(), argv...) }

// EnterArgs is Sandbox.EnterArgs for the sandbox whose init is host PID
// pid (one kept after its plugin exited, say).
func EnterArgs(pid int, argv ...string) []string {
	return append([]string{"nsenter", "--target", strconv.Itoa(pid),
		"--mount", "--pid", "--ipc", "--cgroup", "--root", "--wd", "--"}, argv...)
}

// Process is a process found in the sandbox.
type Process struct {
	PID     int           // in the host's PID namespace
	NSPID   int           // in the sandbox's (0: in its mount namespace only, an nsenter on its way in or out)
	Command string        // its command line, or [comm] when it has none
	Ran     time.Duration // since it started
}

func (p Process) String() string {
	ns := "outside its PID namespace"
	if p.NSPID != 0 {
		ns = fmt.Sprintf("PID %d in the chroot", p.NSPID)
	}
	return fmt.Sprintf("PID %d (%s): %s, ran %.2f s", p.PID, ns, p.Command, p.Ran.Seconds())
}

// Processes lists the processes in the sandbox's PID or mount namespace,
// init aside, by host PID.
func (s *Sandbox) Processes() ([]Process, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	uptime, err := readUptime()
	if err != nil {
		return nil, err
	}
	init := s.InitPID()
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == init {
			continue
		}
		pidNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		mntNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if pidNS != s.pidNS && mntNS != s.mntNS {
			continue
		}
		p, ok := describe(pid, pidNS == s.pidNS, uptime)
		if ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// describe reads what Process says of pid; ok is false when it has
// exited meanwhile or is a zombie (it holds nothing).
func describe(pid int, inPIDNS bool, uptime float64) (Process, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Process{}, false
	}
	s := string(stat)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return Process{}, false
	}
	fields := strings.Fields(s[close+1:])
	// fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
	if len(fields) < 20 || fields[0] == "Z" {
		return Process{}, false
	}
	p := Process{PID: pid, Command: "[" + s[open+1:close] + "]"}
	if start, err := strconv.ParseUint(fields[19], 10, 64); err == nil {
		if ran := uptime - float64(start)/userHZ; ran > 0 {
			p.Ran = time.Duration(ran * float64(time.Second))
		}
	}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(cmdline) > 0 {
		p.Command = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	if inPIDNS {
		p.NSPID = nsPID(pid)
	}
	return p, true
}

// nsPID is pid's number in its innermost PID namespace (the last field
// of NSpid: in /proc/PID/status, proc(5)), or 0.
func nsPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "NSpid:" {
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

func readUptime() (float64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("sandbox: empty /proc/uptime")
	}
	return strconv.ParseFloat(f[0], 64)
}

// Stop ends the sandbox. It first lists the processes still in it (init
// aside) and calls each (may be nil) for each, then sends them SIGTERM,
// waits up to grace for them to exit, and kills init with SIGKILL: the
// kernel kills whatever is left in the PID namespace, and init's exit is
// waited for, so nothing of the sandbox runs or holds a mount when Stop
// returns. It returns what it found. Stopping a stopped sandbox does
// nothing.
func (s *Sandbox) Stop(grace time.Duration, each func(Process)) ([]Process, error) {
	if s.kept {
		return nil, nil
	}
	select {
	case <-s.done:
		return nil, nil
	default:
	}
	left, err := s.Processes()
	if err != nil {
		s.kill()
		return nil, err
	}
	for _, p := range left {
		if each != nil {
			each(p)
		}
		unix.Kill(p.PID, unix.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if left, err = s.Processes(); err != nil {
			break
		}
	}
	s.kill()
	// An nsenter outside the PID namespace (a command cancelled as it
	// entered) outlives init; it holds the mount namespace.
	if rest, _ := s.Processes(); len(rest) > 0 {
		for _, p := range rest {
			unix.Kill(p.PID, unix.SIGKILL)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(rest) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			rest, _ = s.Processes()
		}
		if len(rest) > 0 {
			return left, fmt.Errorf("sandbox of %s: %s still runs after SIGKILL", s.root, rest[0])
		}
	}
	return left, nil
}

// Keep makes the sandbox outlive this process, processes and all, for a
// build kept for inspection (packer build -on-error=abort): init no longer
// dies with it. What releases the chroot then (a reap: processes rooted in
// the image) kills init, and with it the namespace. After Keep, Stop does
// nothing.
func (s *Sandbox) Keep() error {
	select {
	case <-s.done:
		return fmt.Errorf("sandbox of %s: it has ended", s.root)
	default:
	}
	if _, err := io.WriteString(s.stdin, keepLine+"\n"); err != nil {
		return fmt.Errorf("sandbox of %s: %w", s.root, err)
	}
	line, err := s.out.ReadString('\n')
	if strings.TrimSpace(line) != keptLine {
		return fmt.Errorf("sandbox of %s: asked to keep running, it said %q (%v)", s.root, strings.TrimSpace(line), err)
	}
	s.kept = true
	return nil
}

// kill ends init and waits for it (the kernel ends the PID namespace's
// other processes before init's exit completes).
func (s *Sandbox) kill() {
	s.stdin.Close()
	s.cmd.Process.Kill()
	<-s.done
}

// ensureShared makes root and every mount beneath it shared, unless root
// is already: a mount made on the host under a shared mount propagates to
// its slaves, the sandbox's copies (the kernel's
// Documentation/filesystems/sharedsubtree.rst). root must be a mount
// point; the peer group is new (root's parent, the session's private
// fence, does not propagate), so nothing reaches other host mounts.
func ensureShared(root string) error {
	info, err := mountInfoAt(root)
	if err != nil {
		return err
	}
	if strings.Contains(info, " shared:") {
		return nil
	}
	if err := unix.Mount("", root, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("sandbox: making %s a shared mount: %w", root, err)
	}
	return nil
}

// mountInfoAt is the line of /proc/self/mountinfo of the topmost mount on
// dir (proc(5): field 5 is the mount point).
func mountInfoAt(dir string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	found := ""
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && fstab.Unescape(f[4]) == dir {
			found = l // later lines are mounted on top
		}
	}
	if found == "" {
		return "", fmt.Errorf("sandbox: %s is not a mount point", dir)
	}
	return found, nil
}
