package cleanup

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
)

// The killed-owner tests re-exec this test binary as the build that dies.
const childEnv = "IMAGEFACTORY_CLEANUP_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		time.Sleep(time.Hour) // until the parent kills us
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild takes resources into a journal as a build would, prints
// "ready <info>" and returns (the caller then waits to be killed).
func runChild(mode string) error {
	j, err := Open(os.Getenv("IF_STATE"), "child "+mode)
	if err != nil {
		return err
	}
	switch mode {
	case "killed-owner":
		dev, _, err := j.AttachLoop(loop.AttachOpts{Backing: os.Getenv("IF_BACKING")})
		if err != nil {
			return err
		}
		a, b := os.Getenv("IF_MNT_A"), os.Getenv("IF_MNT_B")
		if _, err := j.Take(MountEntry(a, dev.Path(), "ext4")); err != nil {
			return err
		}
		if err := unix.Mount(dev.Path(), a, "ext4", 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", dev.Path(), a, err)
		}
		if _, err := j.Take(MountEntry(b, "tmpfs", "tmpfs")); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", b, "tmpfs", 0, "size=1m"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", b, err)
		}
		fmt.Println("ready", dev.Path())
	case "loop-entry":
		ino, _ := strconv.ParseUint(os.Getenv("IF_INO"), 10, 64)
		if _, err := j.Take(LoopEntry(os.Getenv("IF_DEV"), os.Getenv("IF_BACKING"), ino, 0)); err != nil {
			return err
		}
		fmt.Println("ready")
	case "process-entry":
		// A process that ignores SIGTERM, as a hung QEMU would.
		cmd := exec.Command("sh", "-c", "trap '' TERM; echo trapped; while :; do sleep 1; done")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil { // the trap is set
			return err
		}
		e, err := ProcessEntry(os.Getenv("IF_FILE"), cmd.Process.Pid)
		if err != nil {
			return err
		}
		if _, err := j.Take(e); err != nil {
			return err
		}
		fmt.Println("ready", cmd.Process.Pid)
	case "moved-entry":
		root, name := os.Getenv("IF_ROOT"), "/etc/ld.so.preload"
		var st unix.Stat_t
		if err := unix.Lstat(root+name, &st); err != nil {
			return err
		}
		if _, err := j.Take(MovedEntry(root, name, name+".aside", st.Dev, st.Ino)); err != nil {
			return err
		}
		if err := os.Rename(root+name, root+name+".aside"); err != nil {
			return err
		}
		fmt.Println("ready")
	case "file-entry":
		if _, err := j.Take(FileEntry(os.Getenv("IF_FILE"))); err != nil {
			return err
		}
		fmt.Println("ready")
	default:
		return fmt.Errorf("unknown child mode %q", mode)
	}
	return nil
}

// startChild runs runChild(mode) in a new process and waits for "ready".
// It returns the process and the rest of the ready line.
func startChild(t *testing.T, mode string, env ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "ready") {
		t.Fatalf("child %s: %s", mode, line)
	}
	return cmd, strings.TrimSpace(strings.TrimPrefix(line, "ready"))
}

// killChild kills cmd with SIGKILL, as kill -9 would.
func killChild(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

func requireRoot(t *testing.T, bins ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mounts, chroot)")
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s: %v", b, err)
		}
	}
}

// workDir returns a fresh directory and registers, to run before its
// removal, a check that nothing is left under it: loop device, mount or
// process. A leak fails the test and is then cleaned up by force.
func workDir(t *testing.T) string {
	t.Helper()
	dir := canonical(t.TempDir())
	t.Cleanup(func() { assertClean(t, dir) })
	return dir
}

func assertClean(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var leaks []string
		if pids := rootedPids(dir); len(pids) > 0 {
			leaks = append(leaks, fmt.Sprintf("processes %v rooted in %s", pids, dir))
		}
		mps, _ := mountPointsUnder(dir)
		for _, mp := range mps {
			leaks = append(leaks, "mount "+mp)
		}
		loops, _ := loop.List()
		for _, s := range loops {
			if under(s.Backing, dir) {
				leaks = append(leaks, fmt.Sprintf("loop %s -> %s", s.Device, s.Backing))
			}
		}
		if len(leaks) == 0 {
			return
		}
		if time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		t.Errorf("left behind: %s", strings.Join(leaks, "; "))
		killRooted(dir, time.Second)
		sort.Sort(sort.Reverse(sort.StringSlice(mps)))
		for _, mp := range mps {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
		for _, s := range loops {
			if under(s.Backing, dir) {
				loop.DetachIfBacking(s.Device, s.Backing, s.BackingIno, s.Offset)
			}
		}
		return
	}
}

// busyboxTree puts a static busybox and its sleep/sh links in root/bin.
func busyboxTree(t *testing.T, root string) {
	t.Helper()
	bin := filepath.Join(root, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("needs a static /bin/busybox: %v", err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	// busybox sh sends a background job's stdin to /dev/null.
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	if err := unix.Mknod(filepath.Join(root, "dev", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"sleep", "sh"} {
		if err := os.Symlink("busybox", filepath.Join(bin, l)); err != nil {
			t.Fatal(err)
		}
	}
}

// mountChroot attaches img (an ext4 image) and mounts it at mnt, puts a
// busybox tree in it and journals the chroot, as a build does, all in j.
func mountChroot(t *testing.T, j *Journal, img, mnt string) *loop.Device {
	t.Helper()
	dev, _, err := j.AttachLoop(loop.AttachOpts{Backing: img})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Take(MountEntry(mnt, dev.Path(), "ext4")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev.Path(), mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", dev.Path(), mnt, err)
	}
	busyboxTree(t, mnt)
	if _, err := j.Take(ChrootEntry(mnt)); err != nil {
		t.Fatal(err)
	}
	return dev
}

// startChrooted starts /bin/<args[0]> with its root at root. The test
// reaps it; killing it is the code under test's job.
func startChrooted(t *testing.T, root string, args ...string) *exec.Cmd {
	t.Helper()
	cmd, _ := startChrootedDone(t, root, args...)
	return cmd
}

// startChrootedDone is startChrooted that also returns a channel closed
// once the process has been waited for (cmd.ProcessState is then set).
func startChrootedDone(t *testing.T, root string, args ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := &exec.Cmd{Path: "/bin/" + args[0], Args: args, Dir: "/", SysProcAttr: &syscall.SysProcAttr{Chroot: root}}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v chrooted in %s: %v", args, root, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return cmd, done
}

// waitRooted waits until at least n processes are rooted in dir.
func waitRooted(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(rootedPids(dir)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %v rooted in %s, want %d processes", rootedPids(dir), dir, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ext4Image makes a file of size bytes holding an ext4 filesystem.
func ext4Image(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", path, err, out)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func journals(t *testing.T, stateDir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(stateDir, "*"+journalExt))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func containsLine(lines []string, parts ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}
