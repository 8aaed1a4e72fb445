package cleanup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
)

// A build's life: a loop device, its filesystem mounted, processes (one a
// "daemon" that outlives its parent) running chrooted in it. Teardown must
// kill, unmount, detach: the reverse of the takes.
func TestTeardownReleasesInReverseOrder(t *testing.T) {
	requireRoot(t, "mkfs.ext4")
	dir := workDir(t)
	img := filepath.Join(dir, "disk.raw")
	ext4Image(t, img, 32<<20)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)

	j, err := Open(filepath.Join(dir, "state"), "reverse-order")
	if err != nil {
		t.Fatal(err)
	}
	var log []string
	j.SetLogger(func(m string) { log = append(log, m) })
	defer j.Close()

	dev := mountChroot(t, j, img, mnt)
	startChrooted(t, mnt, "sh", "-c", "sleep 1000 & exec sleep 1001")
	waitRooted(t, mnt, 2)

	if err := j.Teardown(); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	want := [][]string{
		{"killed 2 processes rooted in " + mnt},
		{"unmounted " + mnt},
		{"detached " + dev.Path(), img},
	}
	if len(log) != len(want) {
		t.Fatalf("released %q, want %d lines in order: %v", log, len(want), want)
	}
	for i, w := range want {
		if !containsLine(log[i:i+1], w...) {
			t.Errorf("release #%d = %q, want it to mention %q", i+1, log[i], w)
		}
	}
	if _, err := loop.Info(dev.Path()); err == nil {
		t.Errorf("%s still bound after Teardown", dev.Path())
	}
	path := j.Path()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal %s still there after a clean Close (%v)", path, err)
	}
}

// kill -9 of a build holding a loop device with a mounted filesystem and
// a tmpfs: a later Reap releases both mounts and the loop device.
func TestReapKilledOwner(t *testing.T) {
	requireRoot(t, "mkfs.ext4")
	dir := workDir(t)
	state := filepath.Join(dir, "state")
	img := filepath.Join(dir, "disk.raw")
	ext4Image(t, img, 32<<20)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.Mkdir(a, 0o755)
	os.Mkdir(b, 0o755)

	child, devPath := startChild(t, "killed-owner", "IF_STATE="+state, "IF_BACKING="+img, "IF_MNT_A="+a, "IF_MNT_B="+b)
	t.Cleanup(func() { Reap(state) }) // if the test fails half-way
	killChild(t, child)

	if s, err := loop.Info(devPath); err != nil || s.Backing != img {
		t.Fatalf("after kill -9, %s should still hold %s (mounted): %+v, %v", devPath, img, s, err)
	}
	rep, err := Reap(state)
	if err != nil {
		t.Fatalf("Reap: %v", err)
	}
	t.Logf("report: %q %q", rep.Released, rep.Journals)
	for _, w := range [][]string{{"unmounted " + b}, {"unmounted " + a}, {devPath, img}} {
		if !containsLine(rep.Released, w...) {
			t.Errorf("report %q does not mention %q", rep.Released, w)
		}
	}
	if len(rep.Journals) != 1 || !strings.Contains(rep.Journals[0], "reaped") || !strings.Contains(rep.Journals[0], "child killed-owner") {
		t.Errorf("report journals = %q, want one reaped journal labelled 'child killed-owner'", rep.Journals)
	}
	if js := journals(t, state); len(js) != 0 {
		t.Errorf("journals left after Reap: %v", js)
	}
	rep, err = Reap(state)
	if err != nil || !rep.Empty() {
		t.Errorf("second Reap = %+v, %v; want nothing to do", rep, err)
	}
}

// A journal whose owner lives, in this process or another, is left alone;
// once the other owner dies, its resources are released.
func TestReapLeavesLiveOwners(t *testing.T) {
	requireRoot(t)
	dir := workDir(t)
	state := filepath.Join(dir, "state")
	mine := filepath.Join(dir, "mine.tmp")
	theirs := filepath.Join(dir, "theirs.tmp")
	for _, p := range []string{mine, theirs} {
		os.WriteFile(p, []byte("x"), 0o600)
	}

	j, err := Open(state, "this process")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := j.Take(FileEntry(mine)); err != nil {
		t.Fatal(err)
	}
	child, _ := startChild(t, "file-entry", "IF_STATE="+state, "IF_FILE="+theirs)

	rep, err := Reap(state)
	if err != nil || !rep.Empty() {
		t.Errorf("Reap with live owners = %+v, %v; want nothing done", rep, err)
	}
	for _, p := range []string{mine, theirs} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Reap touched %s of a live owner: %v", p, err)
		}
	}
	if n := len(journals(t, state)); n != 2 {
		t.Errorf("%d journals after Reap, want 2", n)
	}

	killChild(t, child)
	rep, err = Reap(state)
	if err != nil {
		t.Fatal(err)
	}
	if !containsLine(rep.Released, "removed "+theirs) || len(rep.Released) != 1 {
		t.Errorf("Reap after the child died released %q, want only %s", rep.Released, theirs)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("our own file went: %v", err)
	}
	if js := journals(t, state); len(js) != 1 || js[0] != j.Path() {
		t.Errorf("journals left: %v, want only ours %s", js, j.Path())
	}
}

// The dead build's loop number now belongs to someone else's file: the
// reaper must not detach it.
func TestReapSkipsReusedLoopNumber(t *testing.T) {
	requireRoot(t)
	dir := workDir(t)
	state := filepath.Join(dir, "state")
	ours, other := filepath.Join(dir, "ours.raw"), filepath.Join(dir, "other.raw")
	for _, p := range []string{ours, other} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dev, err := loop.Attach(other, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Detach()

	child, _ := startChild(t, "loop-entry", "IF_STATE="+state, "IF_DEV="+dev.Path(), "IF_BACKING="+ours,
		fmt.Sprintf("IF_INO=%d", inode(t, ours)))
	killChild(t, child)

	rep, err := Reap(state)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := loop.Info(dev.Path()); err != nil || s.Backing != other {
		t.Fatalf("Reap detached %s that now belongs to %s: %+v, %v", dev.Path(), other, s, err)
	}
	if !containsLine(rep.Released, dev.Path(), "left alone") {
		t.Errorf("report %q does not say %s was left alone", rep.Released, dev.Path())
	}
	if js := journals(t, state); len(js) != 0 {
		t.Errorf("journals left: %v", js)
	}
}

// Releasing a chroot entry kills every process rooted in the directory or
// below it, even one that ignores SIGTERM, and nothing rooted elsewhere.
func TestChrootEntryKillsRootedProcesses(t *testing.T) {
	requireRoot(t)
	dir := workDir(t)
	root := filepath.Join(dir, "root")
	sibling := filepath.Join(dir, "root2") // shares the prefix "root", not the directory
	for _, r := range []string{root, filepath.Join(root, "inner"), sibling} {
		busyboxTree(t, r)
	}
	// signal is how each must end: SIGTERM first, SIGKILL only for what
	// ignores it (the order the grace period gives, told by events, not
	// by the time Release took); 0 for what must live.
	type proc struct {
		name   string
		signal syscall.Signal
		args   []string
		root   string
		cmd    *exec.Cmd
		done   <-chan struct{}
	}
	procs := []*proc{
		{name: "rooted at root", signal: syscall.SIGTERM, root: root, args: []string{"sleep", "1000"}},
		{name: "rooted below root", signal: syscall.SIGTERM, root: filepath.Join(root, "inner"), args: []string{"sleep", "1000"}},
		{name: "ignores SIGTERM", signal: syscall.SIGKILL, root: root, args: []string{"sh", "-c", "trap '' TERM; sleep 1000; true"}},
		{name: "rooted in a sibling", root: sibling, args: []string{"sleep", "1000"}},
	}
	for _, p := range procs {
		p.cmd, p.done = startChrootedDone(t, p.root, p.args...)
	}
	waitRooted(t, root, 4) // the trap shell and its sleep (the trailing true keeps sh from exec'ing it)
	waitRooted(t, sibling, 1)

	j, err := Open(filepath.Join(dir, "state"), "chroot")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	h, err := j.Take(ChrootEntry(root))
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Release(h); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.signal == 0 {
			if unix.Kill(p.cmd.Process.Pid, 0) != nil || isZombie(p.cmd.Process.Pid) {
				t.Errorf("%s: killed, want it alive", p.name)
			}
			continue
		}
		select {
		case <-p.done:
		case <-time.After(30 * time.Second): // a hang guard, not a measure
			t.Fatalf("%s: still running after Release", p.name)
		}
		ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != p.signal {
			t.Errorf("%s: ended with %v, want killed by %v", p.name, p.cmd.ProcessState, p.signal)
		}
	}
	if pids := rootedPids(root); len(pids) != 0 {
		t.Errorf("still rooted in %s: %v", root, pids)
	}
	procs[3].cmd.Process.Kill()
}

// A build killed while its virtual machine runs: the process it journaled
// outlives it (reparented), and the next Reap ends it, SIGKILL if it
// ignores SIGTERM. A pid whose start time differs is someone else's.
func TestReapKillsJournaledProcess(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	child, pidText := startChild(t, "process-entry", "IF_STATE="+state, "IF_FILE="+filepath.Join(dir, "disk.raw"))
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		t.Fatalf("child said %q", pidText)
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	killChild(t, child)
	if unix.Kill(pid, 0) != nil {
		t.Fatalf("process %d died with its owner; the test proves nothing", pid)
	}
	rep, err := Reap(state)
	if err != nil {
		t.Fatalf("Reap: %v", err)
	}
	if !containsLine(rep.Released, fmt.Sprintf("killed process %d", pid), "SIGKILL") {
		t.Errorf("report %q does not say process %d was killed", rep.Released, pid)
	}
	if !gone(pid, 1) && unix.Kill(pid, 0) == nil && !isZombie(pid) {
		t.Errorf("process %d still runs after Reap", pid)
	}

	// A reused pid: same number, another start time.
	self, _ := procStart(os.Getppid())
	e := Entry{Kind: KindProc, Path: "/x", PID: os.Getppid(), PIDStart: self + 1}
	msg, err := releaseProc(e)
	if err != nil || !strings.Contains(msg, "already exited") || unix.Kill(os.Getppid(), 0) != nil {
		t.Errorf("releaseProc of a reused pid = %q, %v; want it left alone", msg, err)
	}
	if _, err := ProcessEntry("/x", 0x7ffffff0); err == nil {
		t.Error("ProcessEntry of a pid that does not exist succeeded")
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// A mount kept busy by a process that is not chrooted in it (its cwd is
// there) is unmounted lazily, and the message says so.
func TestMountBusyFallsBackToLazyUnmount(t *testing.T) {
	requireRoot(t)
	dir := workDir(t)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	j, err := Open(filepath.Join(dir, "state"), "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	h, err := j.Take(MountEntry(mnt, "tmpfs", "tmpfs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("/bin/busybox", "sleep", "1000")
	sleeper.Dir = mnt
	if err := sleeper.Start(); err != nil {
		t.Skipf("needs /bin/busybox: %v", err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()

	var msgs []string
	j.SetLogger(func(m string) { msgs = append(msgs, m) })
	if err := j.Release(h); err != nil {
		t.Fatal(err)
	}
	if !containsLine(msgs, "lazily unmounted "+mnt) {
		t.Errorf("messages %q do not say %s was lazily unmounted", msgs, mnt)
	}
	if m, _ := isMountPoint(mnt); m {
		t.Errorf("%s still mounted", mnt)
	}
}

func TestFileEntry(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, p string)
		wantErr string
		gone    bool
	}{
		{"file", func(t *testing.T, p string) { os.WriteFile(p, nil, 0o600) }, "", true},
		{"directory tree", func(t *testing.T, p string) {
			os.MkdirAll(filepath.Join(p, "a", "b"), 0o755)
			os.WriteFile(filepath.Join(p, "a", "b", "f"), nil, 0o600)
		}, "", true},
		{"missing", func(t *testing.T, p string) {}, "", true},
		{"directory with a mount inside", func(t *testing.T, p string) {
			os.MkdirAll(filepath.Join(p, "m"), 0o755)
			if err := unix.Mount("tmpfs", filepath.Join(p, "m"), "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(p, "m", "precious"), nil, 0o600)
			t.Cleanup(func() { unix.Unmount(filepath.Join(p, "m"), 0) })
		}, "still mounted", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := workDir(t)
			p := filepath.Join(dir, "victim")
			tc.setup(t, p)
			j, err := Open(filepath.Join(dir, "state"), "file")
			if err != nil {
				t.Fatal(err)
			}
			h, err := j.Take(FileEntry(p))
			if err != nil {
				t.Fatal(err)
			}
			err = j.Release(h)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Release = %v, want error containing %q", err, tc.wantErr)
			}
			_, serr := os.Lstat(p)
			if gone := errors.Is(serr, os.ErrNotExist); gone != tc.gone {
				t.Errorf("%s gone = %v, want %v", p, gone, tc.gone)
			}
			if !tc.gone {
				if _, err := os.Stat(filepath.Join(p, "m", "precious")); err != nil {
					t.Errorf("file inside the mount was touched: %v", err)
				}
				j.Forget(h)
			}
			if err := j.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestTakeRefusesDangerousEntries(t *testing.T) {
	j, err := Open(t.TempDir(), "validate")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, tc := range []struct {
		name string
		e    Entry
		want string
	}{
		{"relative path", Entry{Kind: KindFile, Path: "x"}, "not absolute"},
		{"chroot /", ChrootEntry("/"), "kill every process"},
		{"mount /", Entry{Kind: KindMount, Path: "/"}, "refusing"},
		{"loop without inode", LoopEntry("/dev/loop0", "/x", 0, 0), "reused device"},
		{"unknown kind", Entry{Kind: "socket", Path: "/x"}, "unknown entry kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := j.Take(tc.e); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Take(%+v) = %v, want error containing %q", tc.e, err, tc.want)
			}
		})
	}
}

// A journal cut mid-record (kill -9 during a write) is still reaped; the
// torn record is ignored. The owner is a process that has exited.
func TestReapTornJournal(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o700)
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, nil, 0o600)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skipf("needs true(1): %v", err)
	}
	body := fmt.Sprintf(`{"op":"header","pid":%d,"start":1,"label":"torn"}
{"op":"take","id":1,"entry":{"kind":"file","path":%q}}
{"op":"take","id":2,"entry":{"kind":"mou`, dead.Process.Pid, victim)
	path := filepath.Join(state, "1-torn.journal")
	os.WriteFile(path, []byte(body), 0o600)
	os.WriteFile(filepath.Join(state, fmt.Sprintf(".%d-abandoned.tmp", dead.Process.Pid)), []byte(`{"op":"header"`), 0o600)
	live := filepath.Join(state, fmt.Sprintf(".%d-opening.tmp", os.Getpid())) // an Open in progress
	os.WriteFile(live, nil, 0o600)

	rep, err := Reap(state)
	if err != nil {
		t.Fatal(err)
	}
	if !containsLine(rep.Released, "removed "+victim) {
		t.Errorf("report %q does not mention %s", rep.Released, victim)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 1 || ents[0].Name() != filepath.Base(live) {
		t.Errorf("state dir after Reap: %v, want only the live owner's %s", ents, live)
	}
}

// Forget drops an entry without acting; a Close that could not release
// everything keeps the journal for a later Reap.
func TestForgetAndCloseKeepsJournalOnFailure(t *testing.T) {
	requireRoot(t)
	dir := workDir(t)
	state := filepath.Join(dir, "state")
	kept := filepath.Join(dir, "kept")
	os.WriteFile(kept, nil, 0o600)

	j, err := Open(state, "forget")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := j.Take(FileEntry(kept))
	if err := j.Forget(h); err != nil {
		t.Fatal(err)
	}
	if err := j.Forget(h); err == nil {
		t.Error("second Forget of the same handle succeeded")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("forgotten %s was removed: %v", kept, err)
	}
	if js := journals(t, state); len(js) != 0 {
		t.Errorf("journals after a clean Close: %v", js)
	}

	// Now one that cannot be released: a directory with a mount inside.
	busy := filepath.Join(dir, "busy")
	os.MkdirAll(filepath.Join(busy, "m"), 0o755)
	if err := unix.Mount("tmpfs", filepath.Join(busy, "m"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(filepath.Join(busy, "m"), 0)
	j, err = Open(state, "failing")
	if err != nil {
		t.Fatal(err)
	}
	j.Take(FileEntry(busy))
	if err := j.Close(); err == nil {
		t.Error("Close succeeded though a resource could not be released")
	}
	if js := journals(t, state); len(js) != 1 {
		t.Errorf("journals after a failed Close: %v, want the one kept", js)
	}
	if _, err := j.Take(FileEntry(kept)); err == nil {
		t.Error("Take on a closed journal succeeded")
	}
}

// Concurrent AttachLoop calls on one journal: each device journaled once,
// Teardown detaches them all.
func TestAttachLoopConcurrent(t *testing.T) {
	requireRoot(t)
	dir := workDir(t)
	img := filepath.Join(dir, "disk.raw")
	os.WriteFile(img, make([]byte, 8<<20), 0o600)
	j, err := Open(filepath.Join(dir, "state"), "parallel")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, _, errs[i] = j.AttachLoop(loop.AttachOpts{Backing: img, Offset: int64(i) << 20, Size: 1 << 20})
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	held := len(j.held)
	j.mu.Unlock()
	if held != n {
		t.Errorf("journal holds %d entries, want %d", held, n)
	}
	if err := j.Teardown(); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultStateDir(t *testing.T) {
	t.Setenv("IMAGEFACTORY_STATE_DIR", "")
	if got := DefaultStateDir(); got != "/run/imagefactory" {
		t.Errorf("DefaultStateDir() = %q", got)
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", "/tmp/x")
	if got := DefaultStateDir(); got != "/tmp/x" {
		t.Errorf("DefaultStateDir() with env = %q", got)
	}
}

// defer j.Close() is what cleans up after a panic.
func TestDeferredCloseReleasesOnPanic(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "scratch")
	os.WriteFile(tmp, nil, 0o600)
	state := filepath.Join(dir, "state")
	func() {
		defer func() { recover() }()
		j, err := Open(state, "panic")
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		j.Take(FileEntry(tmp))
		panic("provisioner blew up")
	}()
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s survived the panic: %v", tmp, err)
	}
	if js := journals(t, state); len(js) != 0 {
		t.Errorf("journals left: %v", js)
	}
}
