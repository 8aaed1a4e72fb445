package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestMain(m *testing.M) {
	// Start re-executes this test binary as the sandbox's init.
	if IsInit(os.Args) {
		os.Exit(RunInit(os.Args[2:]))
	}
	if len(os.Args) == 3 && os.Args[1] == escapeCommand {
		os.Exit(tryEscape(os.Args[2]))
	}
	os.Exit(m.Run())
}

// sandboxRoot is a busybox tree on its own tmpfs (a mount point, as an
// image root is), with /dev/mqueue; unmounted at the end.
func sandboxRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("namespaces and mounts need root")
	}
	dir := t.TempDir()
	if err := unix.Mount("sandbox-test", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	fixture.BusyboxTree(t, dir)
	if err := os.MkdirAll(filepath.Join(dir, "dev/mqueue"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	return dir
}

// in runs script with /bin/sh in the sandbox and returns its output.
func in(t *testing.T, s *Sandbox, script string) string {
	t.Helper()
	args := s.EnterArgs("/bin/sh", "-c", script)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	s.ProcAttr(cmd.SysProcAttr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%q in the sandbox: %v\n%s", script, err, out)
	}
	return string(out)
}

// escapeCommand makes this test binary, copied into a sandbox, try the
// classic ways out of a chroot as root (tryEscape).
const escapeCommand = "sandbox-escape-test"

// tryEscape tries to leave the root as chroot(2)'s NOTES tell and says
// whether it then sees the host file marker: it keeps a descriptor of
// its root, chroots into a subdirectory (its root no longer being an
// ancestor, ".." is not stopped), fchdirs back and walks up, then chroots
// into where it got. Exit status 0: contained; 1: escaped; 2: broken.
func tryEscape(marker string) int {
	top, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		fmt.Println("open /:", err)
		return 2
	}
	os.Mkdir("/escape-dir", 0o700)
	defer os.Remove("/escape-dir")
	if err := unix.Chroot("/escape-dir"); err != nil {
		fmt.Println("chroot:", err)
		return 2
	}
	if err := unix.Fchdir(top); err != nil {
		fmt.Println("fchdir:", err)
		return 2
	}
	for range 64 {
		unix.Chdir("..")
	}
	if err := unix.Chroot("."); err != nil {
		fmt.Println("chroot .:", err)
		return 2
	}
	if _, err := os.Stat(marker); err == nil {
		fmt.Println("ESCAPED: sees", marker)
		return 1
	}
	fmt.Println("CONTAINED")
	return 0
}

func TestSandbox(t *testing.T) {
	root := sandboxRoot(t)
	// The host's proc, as the chroot mounts put it there.
	hostProc := filepath.Join(root, "proc")
	if err := os.MkdirAll(hostProc, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("proc", hostProc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(hostProc, unix.MNT_DETACH) })
	s, err := Start(root, "", testCgroup(t, AllowedDevices(nil)))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop(0, nil)
		}
	})
	hostMounts := func() string {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	t.Run("proc shows only the sandbox", func(t *testing.T) {
		got := strings.Fields(in(t, s, "cd /proc && for p in [0-9]*; do echo $p; done"))
		// init (1), nsenter's child, the shell (the same, or its child).
		for _, p := range got {
			if n, _ := strconv.Atoi(p); n > 10 {
				t.Errorf("/proc in the sandbox lists pid %s: %v", p, got)
			}
		}
		if len(got) == 0 || got[0] != "1" {
			t.Errorf("/proc in the sandbox: %v, want 1 first", got)
		}
		if comm := strings.TrimSpace(in(t, s, "cat /proc/1/comm")); !strings.HasPrefix(comm, "sandbox.test") {
			t.Errorf("PID 1 in the sandbox is %q, want the init (this test binary)", comm)
		}
	})

	t.Run("init holds no host file", func(t *testing.T) {
		// The Go runtime's own epoll and eventfd are no way out; a file,
		// pipe or socket of the host would be.
		for _, l := range strings.Split(in(t, s, "cd /proc/1/fd && for f in *; do echo $f $(readlink $f); done"), "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			if n, _ := strconv.Atoi(f[0]); n > 2 && !strings.HasPrefix(f[1], "anon_inode:") {
				t.Errorf("init holds descriptor %s: %s", f[0], f[1])
			}
		}
	})

	t.Run("mqueue and IPC of its own", func(t *testing.T) {
		got := in(t, s, "grep ' /dev/mqueue ' /proc/self/mountinfo || echo none")
		if !strings.Contains(got, "mqueue") {
			t.Errorf("no mqueue on /dev/mqueue in the sandbox: %s", got)
		}
		host, _ := os.Readlink("/proc/self/ns/ipc")
		inside, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(s.InitPID()), "ns/ipc"))
		if host == inside || inside == "" {
			t.Errorf("IPC namespace: host %q, sandbox %q", host, inside)
		}
	})

	t.Run("a mount inside stays inside", func(t *testing.T) {
		in(t, s, "mount -t tmpfs sandbox-inner /mnt && echo x > /mnt/inner")
		if strings.Contains(hostMounts(), "sandbox-inner") {
			t.Errorf("the sandbox's tmpfs on /mnt appears in the host's mount table")
		}
		if _, err := os.Stat(filepath.Join(root, "mnt/inner")); err == nil {
			t.Errorf("a file written on the sandbox's /mnt landed in the host's view of the image")
		}
		in(t, s, "umount /mnt")
	})

	t.Run("a host mount made later shows inside", func(t *testing.T) {
		target := filepath.Join(root, "mnt")
		if err := unix.Mount("sandbox-outer", target, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(target, 0)
		os.WriteFile(filepath.Join(target, "outer"), []byte("from the host\n"), 0o644)
		if got := in(t, s, "cat /mnt/outer"); got != "from the host\n" {
			t.Errorf("the host's later mount on the image's /mnt, seen inside: %q", got)
		}
	})

	t.Run("the chroot escape stays inside", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "host-only")
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		exe, err := os.ReadFile("/proc/self/exe")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "escape"), exe, 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(filepath.Join(root, "escape"))
		if got := in(t, s, "/escape "+escapeCommand+" "+marker); got != "CONTAINED\n" {
			t.Errorf("the chroot escape in the sandbox: %q", got)
		}
		// The control: from a plain chroot (the host's mount namespace)
		// the same program gets out.
		cmd := exec.Command("chroot", root, "/escape", escapeCommand, marker)
		if out, err := cmd.CombinedOutput(); !strings.HasPrefix(string(out), "ESCAPED") {
			t.Errorf("the control, in a plain chroot: %v %q, want ESCAPED", err, out)
		}
	})

	t.Run("the host's proc is not under the fresh one", func(t *testing.T) {
		got := in(t, s, "umount -l /proc; ls /proc | wc -l; mount -t proc proc /proc")
		if strings.TrimSpace(got) != "0" {
			t.Errorf("/proc after an umount in the sandbox holds %s entries, want none", got)
		}
	})

	t.Run("no host device opens", func(t *testing.T) {
		var st unix.Stat_t
		if err := unix.Stat("/", &st); err != nil {
			t.Fatal(err)
		}
		disk := fmt.Sprintf("%d %d", unix.Major(st.Dev), unix.Minor(st.Dev))
		got := in(t, s, "mknod /dev/host b "+disk+" 2>&1; head -c1 /dev/host >/dev/null 2>&1 && echo OPENED; rm -f /dev/host;"+
			// Nor out of the cgroup: its namespace's root is all a cgroup2 mount shows.
			" mkdir -p /cg && mount -t cgroup2 none /cg && echo $$ > /cg/../cgroup.procs; cat /proc/self/cgroup; umount /cg")
		if strings.Contains(got, "OPENED") || !strings.Contains(got, "not permitted") || !strings.Contains(got, "0::/\n") {
			t.Errorf("mknod and open of the host's disk %s in the sandbox, then a move out of the cgroup: %q", disk, got)
		}
	})

	t.Run("stop names and ends what is left", func(t *testing.T) {
		in(t, s, `setsid sh -c 'trap "" TERM; exec 3>/root/held; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &`)
		time.Sleep(200 * time.Millisecond)
		var named []Process
		found, err := s.Stop(300*time.Millisecond, func(p Process) { named = append(named, p) })
		stopped = true
		if err != nil {
			t.Fatal(err)
		}
		if len(found) == 0 || len(named) != len(found) {
			t.Fatalf("Stop found %v, named %v: want the daemon", found, named)
		}
		daemon := false
		for _, p := range found {
			daemon = daemon || (strings.Contains(p.Command, "trap") && p.NSPID > 1 && p.PID > 1 && p.Ran > 0)
		}
		if !daemon {
			t.Errorf("the daemon is not among the named processes: %v", found)
		}
		if left, _ := s.Processes(); len(left) > 0 {
			t.Errorf("still in the sandbox after Stop: %v", left)
		}
		if err := unix.Kill(s.InitPID(), 0); err == nil {
			t.Errorf("init %d still runs", s.InitPID())
		}
		// Nothing on the host has its root in the image any more.
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if r, err := os.Readlink("/proc/" + e.Name() + "/root"); err == nil && strings.HasPrefix(r, root) {
				t.Errorf("process %s still has its root at %s", e.Name(), r)
			}
		}
		if again, err := s.Stop(0, nil); err != nil || len(again) > 0 {
			t.Errorf("a second Stop: %v, %v", again, err)
		}
	})
}

// TestSandboxOutsideNamespace: RunInit refuses to run as anything but PID 1.
func TestSandboxOutsideNamespace(t *testing.T) {
	var b strings.Builder
	if code := runInitTo(&b, []string{"/"}); code == 0 || !strings.Contains(b.String(), "not the first process") {
		t.Errorf("RunInit outside a new PID namespace: exit %d, %q", code, b.String())
	}
}
