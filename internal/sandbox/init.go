package sandbox

// init.go: the sandbox's first process. The builder re-executes its own
// binary with the hidden subcommand InitCommand in fresh mount, PID and IPC
// namespaces (Start), and a cgroup namespace rooted in its device cgroup
// (devices.go); RunInit is what that process does, as PID 1 of its
// namespace. What it follows: mkosi's sandbox (mkosi/sandbox.py: after
// unshare, mount("", "/", MS_SLAVE|MS_REC) so that nothing propagates back
// to the host, then a fresh proc); bubblewrap (bubblewrap.c: --die-with-parent
// is PR_SET_PDEATHSIG SIGKILL, and its do_init is a PID 1 that only reaps);
// systemd-nspawn's stub PID 1 (src/nspawn/nspawn-stub-pid1.c), which reaps
// for a payload that is not an init. Unlike them it runs no payload: each
// command enters with nsenter(1), and the namespace lives as long as init.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// InitCommand is the plugin binary's hidden subcommand that runs RunInit:
// `packer-plugin-imagefactory sandbox-init ROOT`. Not for users.
const InitCommand = "sandbox-init"

// IsInit reports whether args (os.Args) ask for the sandbox init. A binary
// that may start a sandbox calls it first thing in main (or TestMain):
//
//	if sandbox.IsInit(os.Args) { os.Exit(sandbox.RunInit(os.Args[2:])) }
func IsInit(args []string) bool {
	return len(args) > 1 && args[1] == InitCommand
}

// The death signal Start sets is the first thread's alone (prctl(2):
// PR_SET_PDEATHSIG is per thread), and Keep clears it there: the init's
// main goroutine stays on that thread (runtime.LockOSThread in an init
// function, as its documentation says).
func init() {
	if IsInit(os.Args) {
		runtime.LockOSThread()
	}
}

// readyLine is what init writes on its stdout once the namespaces are set
// up; anything else on that line is the error that stopped it.
const readyLine = "ready"

// keepLine on init's stdin makes it outlive the builder; it answers
// keptLine.
const (
	keepLine = "keep"
	keptLine = "kept"
)

// RunInit is the sandbox's PID 1 (args: the image root, a host path). It
// makes every mount of its new mount namespace a slave (mounts the host
// makes later under the root still appear inside; nothing mounted inside
// leaks out), makes the root the namespace's root (pivot_root) and
// detaches the host's tree (setup), mounts a fresh proc on /proc (this PID
// namespace's) and mqueue on /dev/mqueue (this IPC namespace's; where the
// kernel has it and the directory exists), says "ready" on stdout, then
// reaps orphans until its stdin closes. When it returns, the kernel kills
// every process left in the PID namespace (pid_namespaces(7)). The return
// value is the exit status.
func RunInit(args []string) int {
	return runInitTo(os.Stdout, args)
}

// runInitTo is RunInit with its ready line written to out.
func runInitTo(out io.Writer, args []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(out, "sandbox init: "+format+"\n", a...)
		return 1
	}
	if len(args) != 1 {
		return fail("want one argument (the image root), got %d", len(args))
	}
	if os.Getpid() != 1 {
		return fail("not the first process of a new PID namespace (pid %d): start it with sandbox.Start", os.Getpid())
	}
	// Signals from inside the namespace must not end it: PID 1 gets only
	// those it handles, and Go handles TERM, INT and HUP by exiting. The
	// builder stops it with SIGKILL, which PID 1 gets from its parent.
	signal.Ignore(unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE)
	if err := setup(args[0]); err != nil {
		return fail("%v", err)
	}
	fmt.Fprintln(out, readyLine)

	children := make(chan os.Signal, 1)
	signal.Notify(children, unix.SIGCHLD)
	go reap(children)
	// The builder holds the other end of stdin: its exit, even by
	// SIGKILL, closes it, and so ends the namespace; unless it said
	// "keep" first (Sandbox.Keep), for a build kept for inspection.
	// Fd 0 is read as is: os.Stdin would add Go's poller, an epoll
	// descriptor more in /proc/1/fd.
	var line []byte
	buf := make([]byte, 512)
	for {
		n, err := unix.Read(0, buf)
		if n <= 0 && err != unix.EINTR {
			break
		}
		line = append(line, buf[:max(n, 0)]...)
		if bytes.Contains(line, []byte(keepLine+"\n")) {
			// Outlive the builder: no death signal, and say so.
			if err := unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0); err != nil {
				fmt.Fprintf(out, "sandbox init: %v\n", err)
				continue
			}
			fmt.Fprintln(out, keptLine)
			for {
				unix.Pause() // until a reap kills it
			}
		}
	}
	return 0
}

// setup makes the mounts slaves, moves the namespace's root to root with
// pivot_root(2) and detaches the host's tree, then mounts proc and mqueue
// there. The targets are resolved after the pivot: a symlink in the image
// cannot send a mount to a host path.
//
// chroot(2) alone is no boundary for root (chroot(2), NOTES: a process
// with CAP_SYS_CHROOT leaves it by chrooting into a subdirectory and
// walking up with "cd .."): after the pivot and the detach, the
// namespace holds no mount of the host's tree to walk up into. As runc
// (libcontainer/rootfs_linux.go pivotRoot: pivot_root(".", "."), then
// umount2(".", MNT_DETACH)), nspawn (mount_move_root) and bubblewrap do.
// root must be a mount point (Start checks it); the namespace's mounts
// are slaves, so the detach does not reach the host, and mounts the host
// makes under root later still propagate to the new root.
func setup(root string) error {
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making the mounts slaves: %w", err)
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root to %s: %w", root, err)
	}
	// The old root is now stacked on "." (pivot_root(2), "new_root and
	// put_old may be the same directory").
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the host's root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if isDir("/proc") {
		// The chroot mounts put the host's proc here (its PID namespace's
		// /proc/1/root is the host's root): it goes, not just covered, so
		// that an umount of the fresh one shows nothing of the host.
		for range 8 {
			if unix.Unmount("/proc", unix.MNT_DETACH) != nil {
				break
			}
		}
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mounting proc on %s/proc: %w", root, err)
		}
	}
	if isDir("/dev/mqueue") && kernelHas("mqueue") {
		if err := unix.Mount("mqueue", "/dev/mqueue", "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mounting mqueue on %s/dev/mqueue: %w", root, err)
		}
	}
	return nil
}

// isDir: p is a directory, not a symlink to one.
func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// kernelHas reports whether /proc/filesystems lists fstype.
func kernelHas(fstype string) bool {
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 0 && fields[len(fields)-1] == fstype {
			return true
		}
	}
	return false
}

// reap collects every child that exits: orphans of the namespace are
// re-parented to its PID 1.
func reap(children <-chan os.Signal) {
	for range children {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
