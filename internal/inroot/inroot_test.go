package inroot

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostile builds an image root full of links that point at host canaries,
// and returns the root and a function that checks the canaries.
type hostileEnv struct {
	root        *Root
	rootDir     string
	canaryFile  string // host file outside the root
	canaryDir   string // host directory outside the root
	insideAlias string // root + canaryFile: where an absolute link to canaryFile must land
}

const canaryContent = "host canary: must never change\n"

func newHostile(t *testing.T) *hostileEnv {
	t.Helper()
	base := t.TempDir()
	e := &hostileEnv{
		rootDir:    filepath.Join(base, "root"),
		canaryFile: filepath.Join(base, "host", "canary.txt"),
		canaryDir:  filepath.Join(base, "host", "dir"),
	}
	must(t, os.MkdirAll(e.canaryDir, 0o755))
	must(t, os.WriteFile(e.canaryFile, []byte(canaryContent), 0o640))
	must(t, os.WriteFile(filepath.Join(e.canaryDir, "keep"), []byte(canaryContent), 0o640))
	must(t, os.MkdirAll(filepath.Join(e.rootDir, "etc"), 0o755))
	must(t, os.MkdirAll(filepath.Join(e.rootDir, "root"), 0o700))
	// Absolute link: in a chroot it means <root>/<canaryFile>.
	must(t, os.Symlink(e.canaryFile, filepath.Join(e.rootDir, "etc", "x")))
	// Relative link climbing far above the root.
	up := strings.Repeat("../", 12) + strings.TrimPrefix(e.canaryFile, "/")
	must(t, os.Symlink(up, filepath.Join(e.rootDir, "etc", "up")))
	// Directory links to the host's / and to a host directory.
	must(t, os.Symlink("/", filepath.Join(e.rootDir, "root", ".ssh")))
	must(t, os.Symlink(e.canaryDir, filepath.Join(e.rootDir, "hostdir")))
	must(t, os.Symlink(strings.Repeat("../", 12)+strings.TrimPrefix(e.canaryDir, "/"), filepath.Join(e.rootDir, "updir")))
	// Magic link: only reachable if /proc were mounted in the image, but
	// an absolute link to /proc/self/root must not escape either.
	must(t, os.Symlink("/proc/self/root"+e.canaryFile, filepath.Join(e.rootDir, "etc", "magic")))
	r, err := Open(e.rootDir)
	must(t, err)
	t.Cleanup(func() { r.Close() })
	e.root = r
	e.insideAlias = filepath.Join(e.rootDir, e.canaryFile)
	return e
}

func (e *hostileEnv) checkCanaries(t *testing.T) {
	t.Helper()
	for _, f := range []string{e.canaryFile, filepath.Join(e.canaryDir, "keep")} {
		b, err := os.ReadFile(f)
		if err != nil || string(b) != canaryContent {
			t.Errorf("host canary %s changed: %q, %v", f, b, err)
		}
		fi, err := os.Stat(f)
		if err == nil {
			if fi.Mode().Perm() != 0o640 {
				t.Errorf("host canary %s mode changed to %v", f, fi.Mode())
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != uint32(os.Getuid()) {
				t.Errorf("host canary %s owner changed to %d", f, st.Uid)
			}
		}
	}
	ents, err := os.ReadDir(e.canaryDir)
	if err != nil || len(ents) != 1 {
		t.Errorf("host canary directory %s changed: %v %v", e.canaryDir, ents, err)
	}
	ents, err = os.ReadDir(filepath.Dir(e.canaryFile))
	if err != nil || len(ents) != 2 {
		t.Errorf("host directory %s changed: %v %v", filepath.Dir(e.canaryFile), ents, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// errNeedsRoot is what an operation of TestHostileImageNeverReachesHost
// returns, untried, when the test does not run as root.
var errNeedsRoot = errors.New("needs root")

func TestHostileImageNeverReachesHost(t *testing.T) {
	hostSrc := t.TempDir()
	must(t, os.WriteFile(filepath.Join(hostSrc, "payload"), []byte("payload"), 0o644))
	must(t, os.MkdirAll(filepath.Join(hostSrc, "tree", "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(hostSrc, "tree", "sub", "f"), []byte("payload"), 0o644))

	type check func(t *testing.T, e *hostileEnv, err error)
	wantErr := func(t *testing.T, e *hostileEnv, err error) {
		if err == nil {
			t.Error("want an error, got none")
		}
	}
	noErr := func(t *testing.T, e *hostileEnv, err error) {
		if err != nil {
			t.Errorf("unexpected error: %v", err)
		}
	}
	inRootFile := func(rel, content string) check {
		return func(t *testing.T, e *hostileEnv, err error) {
			noErr(t, e, err)
			b, rerr := os.ReadFile(filepath.Join(e.rootDir, rel))
			if rerr != nil || string(b) != content {
				t.Errorf("%s inside the root: %q, %v; want %q", rel, b, rerr, content)
			}
		}
	}
	linkGone := func(rel string) check {
		return func(t *testing.T, e *hostileEnv, err error) {
			noErr(t, e, err)
			if _, err := os.Lstat(filepath.Join(e.rootDir, rel)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s still exists in the root: %v", rel, err)
			}
		}
	}

	tests := []struct {
		name  string
		op    func(e *hostileEnv) error
		check check
	}{
		{"WriteFile replaces absolute link", func(e *hostileEnv) error { return e.root.WriteFile("/etc/x", []byte("new"), 0o644) }, inRootFile("etc/x", "new")},
		{"WriteFile replaces climbing link", func(e *hostileEnv) error { return e.root.WriteFile("etc/up", []byte("new"), 0o644) }, inRootFile("etc/up", "new")},
		{"WriteFile through dir link to /", func(e *hostileEnv) error {
			return e.root.WriteFile("/root/.ssh/authorized_keys", []byte("key"), 0o600)
		}, inRootFile("authorized_keys", "key")},
		{"WriteFile through dir link to host dir", func(e *hostileEnv) error { return e.root.WriteFile("hostdir/keep", []byte("x"), 0o644) }, wantErr},
		{"WriteFile through climbing dir link", func(e *hostileEnv) error { return e.root.WriteFile("updir/keep", []byte("x"), 0o644) }, wantErr},
		{"WriteFile with dotdot", func(e *hostileEnv) error {
			return e.root.WriteFile("../../../../"+e.canaryFile, []byte("x"), 0o644)
		}, wantErr},
		{"OpenFile O_TRUNC through absolute link", func(e *hostileEnv) error {
			f, err := e.root.OpenFile("etc/x", os.O_WRONLY|os.O_TRUNC, 0)
			if err == nil {
				f.Close()
			}
			return err
		}, wantErr},
		{"OpenFile O_CREAT through absolute link lands in root", func(e *hostileEnv) error {
			must(t, os.MkdirAll(filepath.Dir(e.insideAlias), 0o755))
			f, err := e.root.OpenFile("etc/x", os.O_WRONLY|os.O_CREATE, 0o644)
			if err == nil {
				f.WriteString("inside")
				f.Close()
			}
			return err
		}, func(t *testing.T, e *hostileEnv, err error) {
			inRootFile(e.canaryFile, "inside")(t, e, err)
		}},
		{"OpenFile O_NOFOLLOW refuses link", func(e *hostileEnv) error {
			_, err := e.root.OpenFile("etc/x", os.O_RDONLY|syscall.O_NOFOLLOW, 0)
			return err
		}, wantErr},
		{"ReadFile absolute link reads the root's copy", func(e *hostileEnv) error {
			must(t, os.MkdirAll(filepath.Dir(e.insideAlias), 0o755))
			must(t, os.WriteFile(e.insideAlias, []byte("inside"), 0o644))
			b, err := e.root.ReadFile("etc/x")
			if err == nil && string(b) != "inside" {
				t.Errorf("ReadFile etc/x = %q, want the root's copy", b)
			}
			return err
		}, noErr},
		{"ReadFile climbing link", func(e *hostileEnv) error {
			b, err := e.root.ReadFile("etc/up")
			if bytes.Contains(b, []byte("canary")) {
				t.Error("read the host canary")
			}
			return err
		}, wantErr},
		{"ReadFile magic link", func(e *hostileEnv) error {
			_, err := e.root.ReadFile("etc/magic")
			return err
		}, wantErr},
		{"Remove absolute link removes the link", func(e *hostileEnv) error { return e.root.Remove("etc/x") }, linkGone("etc/x")},
		{"Remove dir link to / removes the link", func(e *hostileEnv) error { return e.root.Remove("root/.ssh") }, linkGone("root/.ssh")},
		{"Remove through dir link to host dir", func(e *hostileEnv) error { return e.root.Remove("hostdir/keep") }, wantErr},
		{"RemoveAll dir link to host dir removes the link", func(e *hostileEnv) error { return e.root.RemoveAll("hostdir") }, linkGone("hostdir")},
		{"RemoveAll trailing slash on dir link", func(e *hostileEnv) error { return e.root.RemoveAll("updir/") }, linkGone("updir")},
		{"RemoveAll through dir link to host dir", func(e *hostileEnv) error { return e.root.RemoveAll("hostdir/keep") }, noErr},
		{"RemoveAll whole root content via /root/.ssh/etc", func(e *hostileEnv) error { return e.root.RemoveAll("root/.ssh/etc") }, linkGone("etc")},
		{"RemoveAll root refused", func(e *hostileEnv) error { return e.root.RemoveAll("/") }, wantErr},
		{"MkdirAll through host dir link", func(e *hostileEnv) error { return e.root.MkdirAll("hostdir/sub/deeper", 0o755) }, wantErr},
		{"MkdirAll through link to / stays inside", func(e *hostileEnv) error { return e.root.MkdirAll("root/.ssh/newdir/x", 0o755) }, func(t *testing.T, e *hostileEnv, err error) {
			noErr(t, e, err)
			if fi, err := os.Stat(filepath.Join(e.rootDir, "newdir", "x")); err != nil || !fi.IsDir() {
				t.Errorf("newdir/x not created inside the root: %v", err)
			}
		}},
		{"Symlink through host dir link", func(e *hostileEnv) error { return e.root.Symlink("/etc/shadow", "hostdir/evil") }, wantErr},
		{"Rename onto host dir link", func(e *hostileEnv) error { return e.root.Rename("etc/x", "hostdir/keep") }, wantErr},
		{"Rename link moves the link", func(e *hostileEnv) error { return e.root.Rename("etc/x", "etc/y") }, func(t *testing.T, e *hostileEnv, err error) {
			noErr(t, e, err)
			if l, err := os.Readlink(filepath.Join(e.rootDir, "etc", "y")); err != nil || l != e.canaryFile {
				t.Errorf("etc/y = %q, %v", l, err)
			}
		}},
		{"Chmod through absolute link", func(e *hostileEnv) error { return e.root.Chmod("etc/x", 0o777) }, wantErr},
		{"Chmod through climbing link", func(e *hostileEnv) error { return e.root.Chmod("etc/up", 0o777) }, wantErr},
		{"Chown through host dir link", func(e *hostileEnv) error { return e.root.Chown("hostdir/keep", 1234, 1234) }, wantErr},
		{"Lchown changes the link only", func(e *hostileEnv) error {
			if os.Geteuid() != 0 {
				return errNeedsRoot // chown to another owner
			}
			return e.root.Lchown("etc/x", 1234, 1234)
		}, noErr},
		{"Stat absolute link", func(e *hostileEnv) error { _, err := e.root.Stat("etc/x"); return err }, wantErr},
		{"CopyIn file over absolute link", func(e *hostileEnv) error {
			return e.root.CopyIn(filepath.Join(hostSrc, "payload"), "etc/x")
		}, inRootFile("etc/x", "payload")},
		{"CopyIn file through host dir link", func(e *hostileEnv) error {
			return e.root.CopyIn(filepath.Join(hostSrc, "payload"), "hostdir/keep")
		}, wantErr},
		{"CopyIn tree through link to /", func(e *hostileEnv) error {
			return e.root.CopyIn(filepath.Join(hostSrc, "tree"), "root/.ssh/tree")
		}, inRootFile("tree/sub/f", "payload")},
		{"CopyIn tree through climbing dir link", func(e *hostileEnv) error {
			return e.root.CopyIn(filepath.Join(hostSrc, "tree"), "updir/tree")
		}, wantErr},
		{"CopyOut absolute link", func(e *hostileEnv) error {
			return e.root.CopyOut("etc/x", filepath.Join(t.TempDir(), "out"))
		}, wantErr},
		{"CopyOut tree keeps links as links", func(e *hostileEnv) error {
			out := filepath.Join(t.TempDir(), "out")
			err := e.root.CopyOut("/", out)
			if l, lerr := os.Readlink(filepath.Join(out, "etc", "x")); lerr != nil || l != e.canaryFile {
				t.Errorf("out/etc/x = %q, %v; want a link", l, lerr)
			}
			if fi, err := os.Lstat(filepath.Join(out, "hostdir")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("out/hostdir is not a link: %v, %v", fi, err)
			}
			return err
		}, noErr},
		{"PathFD of link to / is the root", func(e *hostileEnv) error {
			p, err := e.root.RealPath("root/.ssh")
			if err == nil && p != "/" {
				t.Errorf("RealPath root/.ssh = %q, want /", p)
			}
			return err
		}, noErr},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newHostile(t)
			err := tc.op(e)
			if errors.Is(err, errNeedsRoot) {
				t.Skip("needs root")
			}
			tc.check(t, e, err)
			e.checkCanaries(t)
		})
	}
}

func TestWriteFileAtomicAndOwner(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir)
	must(t, err)
	defer r.Close()
	must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("old"), 0o600))
	if os.Geteuid() == 0 {
		must(t, os.Chown(filepath.Join(dir, "f"), 1001, 1002))
	}
	must(t, r.WriteFile("f", []byte("new"), 0o4755))
	fi, err := os.Stat(filepath.Join(dir, "f"))
	must(t, err)
	if fi.Mode() != 0o755|fs.ModeSetuid {
		t.Errorf("mode = %v, want setuid 0755", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != 1001 || st.Gid != 1002) {
		t.Errorf("owner = %d:%d, want the replaced file's 1001:1002", st.Uid, st.Gid)
	}
	// A failing source leaves the old file and no temporary behind.
	err = r.WriteFileFrom("f", errReader{}, 0o644)
	if err == nil {
		t.Fatal("WriteFileFrom with a failing reader succeeded")
	}
	b, _ := r.ReadFile("f")
	if string(b) != "new" {
		t.Errorf("content after failed write = %q, want the old one", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries after a failed write, want 1", len(ents))
	}
	if err := r.WriteFile("/", nil, 0o644); err == nil {
		t.Error("WriteFile on the root succeeded")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("source failed") }

func TestBasicOps(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir)
	must(t, err)
	defer r.Close()
	if r.Path() != dir {
		t.Errorf("Path = %q", r.Path())
	}
	must(t, r.MkdirAll("/a/b/c", 0o755))
	must(t, r.MkdirAll("a/b/c", 0o755)) // exists: fine
	must(t, r.WriteFile("a/file", []byte("x"), 0o644))
	if err := r.MkdirAll("a/file/sub", 0o755); err == nil {
		t.Error("MkdirAll under a file succeeded")
	}
	must(t, r.Symlink("/a/b", "l"))
	if got, err := r.Readlink("l"); err != nil || got != "/a/b" {
		t.Errorf("Readlink = %q, %v", got, err)
	}
	if fi, err := r.Lstat("l"); err != nil || fi.Mode()&fs.ModeSymlink == 0 || fi.Name() != "l" {
		t.Errorf("Lstat l = %v, %v", fi, err)
	}
	if fi, err := r.Stat("l/c"); err != nil || !fi.IsDir() {
		t.Errorf("Stat l/c = %v, %v", fi, err)
	}
	if ok, err := r.Exists("l/c"); !ok || err != nil {
		t.Errorf("Exists l/c = %v, %v", ok, err)
	}
	if ok, err := r.Exists("nope"); ok || err != nil {
		t.Errorf("Exists nope = %v, %v", ok, err)
	}
	must(t, r.Symlink("/nowhere", "dangling"))
	if ok, err := r.Exists("dangling"); !ok || err != nil {
		t.Errorf("Exists dangling = %v, %v", ok, err)
	}
	if p, err := r.RealPath("l/c"); err != nil || p != "/a/b/c" {
		t.Errorf("RealPath l/c = %q, %v", p, err)
	}
	must(t, r.Chmod("l", 0o700)) // follows: a/b
	if fi, _ := os.Stat(filepath.Join(dir, "a/b")); fi.Mode().Perm() != 0o700 {
		t.Errorf("a/b mode = %v", fi.Mode())
	}
	if os.Geteuid() == 0 {
		must(t, r.Chown("a/file", 7, 8))
		must(t, r.Lchown("l", 9, 10))
		st := mustLstat(t, filepath.Join(dir, "a/file"))
		if st.Uid != 7 || st.Gid != 8 {
			t.Errorf("a/file owner %d:%d", st.Uid, st.Gid)
		}
		st = mustLstat(t, filepath.Join(dir, "l"))
		if st.Uid != 9 || st.Gid != 10 {
			t.Errorf("l owner %d:%d", st.Uid, st.Gid)
		}
	}
	must(t, r.Rename("a/file", "a/b/moved"))
	if b, err := r.ReadFile("l/moved"); err != nil || string(b) != "x" {
		t.Errorf("ReadFile l/moved = %q, %v", b, err)
	}
	if err := r.Remove("a"); err == nil {
		t.Error("Remove of a non-empty dir succeeded")
	}
	must(t, r.Remove("a/b/c")) // empty dir
	must(t, r.RemoveAll("a"))
	must(t, r.RemoveAll("a")) // missing: fine
	if _, err := os.Lstat(filepath.Join(dir, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a still there: %v", err)
	}
	mt := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(t, r.Chtimes("l", mt, mt))
	if fi, _ := r.Lstat("l"); !fi.ModTime().Equal(mt) {
		t.Errorf("l mtime = %v", fi.ModTime())
	}
	must(t, r.Close())
	if _, err := r.ReadFile("l"); err == nil {
		t.Error("ReadFile after Close succeeded")
	}
}

func mustLstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	must(t, err)
	return fi.Sys().(*syscall.Stat_t)
}

func TestRemoveAllStopsAtMountPoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "dev")
	must(t, os.MkdirAll(mnt, 0o755))
	must(t, unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	must(t, os.WriteFile(filepath.Join(mnt, "precious"), []byte("x"), 0o644))
	r, err := Open(dir)
	must(t, err)
	defer r.Close()
	if err := r.RemoveAll("/"); err == nil {
		t.Error("RemoveAll of the root succeeded")
	}
	if err := r.RemoveAll("dev"); err == nil || !strings.Contains(err.Error(), "mount point") {
		t.Errorf("RemoveAll across a mount point: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "precious")); err != nil {
		t.Errorf("file under the mount point was removed: %v", err)
	}
}

func TestCopyInOut(t *testing.T) {
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "d", "e"), 0o750))
	must(t, os.WriteFile(filepath.Join(src, "d", "f"), []byte("file f"), 0o640))
	must(t, os.WriteFile(filepath.Join(src, "d", "e", "suid"), []byte("suid"), 0o755))
	must(t, os.Chmod(filepath.Join(src, "d", "e", "suid"), 0o755|fs.ModeSetuid))
	must(t, os.Symlink("/etc/passwd", filepath.Join(src, "d", "abs")))
	must(t, os.Symlink("../f", filepath.Join(src, "d", "e", "rel")))
	if os.Geteuid() == 0 {
		must(t, os.Lchown(filepath.Join(src, "d", "f"), 4321, 4322))
	}
	dir := t.TempDir()
	r, err := Open(dir)
	must(t, err)
	defer r.Close()

	must(t, r.CopyIn(filepath.Join(src, "d"), "/opt/app"))
	must(t, r.CopyIn(filepath.Join(src, "d", "f"), "/single"))
	want := map[string]string{
		"opt/app/f":      "file f",
		"opt/app/e/suid": "suid",
		"opt/app/abs":    "-> /etc/passwd",
		"opt/app/e/rel":  "-> ../f",
		"single":         "file f",
	}
	for rel, content := range want {
		if content == "" {
			continue
		}
		p := filepath.Join(dir, rel)
		if strings.HasPrefix(content, "-> ") {
			if l, err := os.Readlink(p); err != nil || l != content[3:] {
				t.Errorf("%s = %q, %v; want link %s", rel, l, err, content[3:])
			}
			continue
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != content {
			t.Errorf("%s = %q, %v", rel, b, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "opt/app/e/suid")); fi.Mode() != 0o755|fs.ModeSetuid {
		t.Errorf("suid mode in image = %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(dir, "opt/app/e")); fi.Mode().Perm() != 0o750 {
		t.Errorf("dir mode in image = %v", fi.Mode())
	}
	if os.Geteuid() == 0 {
		if st := mustLstat(t, filepath.Join(dir, "opt/app/f")); st.Uid != 4321 || st.Gid != 4322 {
			t.Errorf("owner in image = %d:%d", st.Uid, st.Gid)
		}
	}

	// Out again: links stay links, setuid is dropped, a FIFO is refused.
	out := filepath.Join(t.TempDir(), "out")
	must(t, r.CopyOut("opt/app", out))
	var got []string
	filepath.Walk(out, func(p string, fi fs.FileInfo, err error) error {
		rel, _ := filepath.Rel(out, p)
		got = append(got, rel+" "+fi.Mode().String())
		return nil
	})
	sort.Strings(got)
	wantOut := []string{". drwxr-x---", "abs Lrwxrwxrwx", "e drwxr-x---", "e/rel Lrwxrwxrwx", "e/suid -rwxr-xr-x", "f -rw-r-----"}
	if strings.Join(got, ",") != strings.Join(wantOut, ",") {
		t.Errorf("CopyOut tree:\n got %v\nwant %v", got, wantOut)
	}
	if l, _ := os.Readlink(filepath.Join(out, "abs")); l != "/etc/passwd" {
		t.Errorf("abs link = %q", l)
	}
	single := filepath.Join(t.TempDir(), "single")
	must(t, r.CopyOut("single", single))
	if b, _ := os.ReadFile(single); string(b) != "file f" {
		t.Errorf("single = %q", b)
	}
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	if err := r.CopyOut("fifo", filepath.Join(t.TempDir(), "fifo")); err == nil {
		t.Error("CopyOut of a FIFO succeeded")
	}
}
