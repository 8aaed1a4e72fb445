package imagefactory

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

const canaryText = "host canary: must never change\n"

// commWorld is an image root in a temp dir, with host canaries beside it
// that the image's links point at.
type commWorld struct {
	dir     string // the image root on the host
	hostDir string // a host directory outside the root
	canary  string // hostDir/passwd-canary
	comm    *Communicator
}

func newCommWorld(t *testing.T, tree func(dir string)) *commWorld {
	t.Helper()
	base := t.TempDir()
	w := &commWorld{dir: filepath.Join(base, "root"), hostDir: filepath.Join(base, "host")}
	w.canary = filepath.Join(w.hostDir, "passwd-canary")
	mustDo(t, os.MkdirAll(filepath.Join(w.dir, "etc"), 0o755))
	mustDo(t, os.MkdirAll(filepath.Join(w.dir, "tmp"), 0o1777))
	mustDo(t, os.MkdirAll(w.hostDir, 0o755))
	mustDo(t, os.WriteFile(w.canary, []byte(canaryText), 0o644))
	if tree != nil {
		tree(w.dir)
	}
	r, err := inroot.Open(w.dir)
	mustDo(t, err)
	t.Cleanup(func() { r.Close() })
	var c Config
	if _, err := c.Prepare(map[string]interface{}{"base_image": "x.img", "environment": map[string]string{"FOO": "bar baz"}}); err != nil {
		t.Fatal(err)
	}
	w.comm = &Communicator{Root: r, Wrapper: c.wrapper(), Env: chrootEnv(c.Environment)}
	return w
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkHost fails if anything in the host directory changed.
func (w *commWorld) checkHost(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(w.canary)
	if err != nil || string(b) != canaryText {
		t.Errorf("host canary %s changed: %q, %v", w.canary, b, err)
	}
	ents, _ := os.ReadDir(w.hostDir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("host directory %s now holds %v", w.hostDir, names)
	}
}

// in is the host path of name inside the image.
func (w *commWorld) in(name string) string { return filepath.Join(w.dir, name) }

func TestCommunicatorUpload(t *testing.T) {
	tests := []struct {
		name    string
		tree    func(w *commWorld)
		dst     string
		mode    os.FileMode // of the uploaded file's FileInfo; 0: none given
		landsAt string      // host path (with ROOT and HOST) that gets the content
		wantErr string
	}{
		{name: "plain file", dst: "/tmp/f", landsAt: "ROOT/tmp/f"},
		{name: "mode from FileInfo", dst: "/tmp/f", mode: 0o600, landsAt: "ROOT/tmp/f"},
		{name: "relative name", dst: "tmp/f", landsAt: "ROOT/tmp/f"},
		{name: "dot-dot climbing", dst: "/../../../../tmp/f", landsAt: "ROOT/tmp/f"},
		{
			name: "absolute link to a host file, target dir in the image",
			tree: func(w *commWorld) {
				os.Symlink(w.canary, w.in("tmp/x"))
				os.MkdirAll(w.in(w.hostDir), 0o755)
			},
			dst: "/tmp/x", landsAt: "ROOT/HOST/passwd-canary",
		},
		{
			name:    "absolute link to a host file, no such dir in the image",
			tree:    func(w *commWorld) { os.Symlink(w.canary, w.in("tmp/x")) },
			dst:     "/tmp/x",
			wantErr: "no such file or directory",
		},
		{
			name: "relative link climbing out",
			tree: func(w *commWorld) {
				os.Symlink(strings.Repeat("../", 20)+strings.TrimPrefix(w.canary, "/"), w.in("tmp/x"))
				os.MkdirAll(w.in(w.hostDir), 0o755)
			},
			dst: "/tmp/x", landsAt: "ROOT/HOST/passwd-canary",
		},
		{
			name: "directory link to the host dir",
			tree: func(w *commWorld) {
				os.Symlink(w.hostDir, w.in("hostdir"))
				os.MkdirAll(w.in(w.hostDir), 0o755)
			},
			dst: "/hostdir/passwd-canary", landsAt: "ROOT/HOST/passwd-canary",
		},
		{name: "missing parent", dst: "/nope/f", wantErr: "upload to /nope/f in the image"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newCommWorld(t, nil)
			if tc.tree != nil {
				tc.tree(w)
			}
			var fi *os.FileInfo
			if tc.mode != 0 {
				src := filepath.Join(t.TempDir(), "src")
				mustDo(t, os.WriteFile(src, nil, tc.mode))
				mustDo(t, os.Chmod(src, tc.mode))
				st, err := os.Stat(src)
				mustDo(t, err)
				fi = &st
			}
			err := w.comm.Upload(tc.dst, strings.NewReader("uploaded\n"), fi)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Upload error = %v, want one containing %q", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("Upload: %v", err)
				}
				at := strings.NewReplacer("ROOT", w.dir, "HOST", w.hostDir).Replace(tc.landsAt)
				got, err := os.ReadFile(at)
				if err != nil || string(got) != "uploaded\n" {
					t.Errorf("%s = %q, %v; want the upload", at, got, err)
				}
				want := os.FileMode(0o644)
				if tc.mode != 0 {
					want = tc.mode
				}
				if st, err := os.Stat(at); err == nil && st.Mode().Perm() != want {
					t.Errorf("%s mode %v, want %v", at, st.Mode().Perm(), want)
				}
			}
			w.checkHost(t)
		})
	}
}

// hostTree makes a host directory to upload.
func hostTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "payload")
	for name, content := range map[string]string{
		"a.txt": "a\n", "b.log": "b\n", "sub/c.txt": "c\n", "sub/d.log": "d\n",
	} {
		mustDo(t, os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755))
		mustDo(t, os.WriteFile(filepath.Join(src, name), []byte(content), 0o644))
	}
	mustDo(t, os.Symlink("/etc/passwd", filepath.Join(src, "link")))
	return src
}

// listTree lists a host tree: "name" for files, "name/" for directories,
// "name -> target" for links, sorted.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			rel += " -> " + target
		case d.IsDir():
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestCommunicatorUploadDir(t *testing.T) {
	all := []string{"a.txt", "b.log", "link -> /etc/passwd", "sub/", "sub/c.txt", "sub/d.log"}
	tests := []struct {
		name     string
		tree     func(w *commWorld)
		dst      string
		slash    bool // upload "src/" rather than "src"
		exclude  []string
		checkDir string // directory in the image (ROOT/HOST) that gets the files
		want     []string
		wantErr  string
	}{
		{name: "contents (trailing slash)", dst: "/opt/app", slash: true, checkDir: "ROOT/opt/app", want: all},
		{name: "the directory (no slash)", dst: "/opt", checkDir: "ROOT/opt/payload", want: all},
		{name: "exclude", dst: "/opt/app", slash: true, exclude: []string{"*.log", "link"}, checkDir: "ROOT/opt/app",
			want: []string{"a.txt", "sub/", "sub/c.txt", "sub/d.log"}},
		{
			name: "destination is a link to a host dir",
			tree: func(w *commWorld) {
				os.Symlink(w.hostDir, w.in("opt"))
				os.MkdirAll(w.in(w.hostDir), 0o755)
			},
			dst:      "/opt",
			checkDir: "ROOT/HOST/payload",
			want:     all,
		},
		{
			name:    "destination is a link to a host dir absent from the image",
			tree:    func(w *commWorld) { os.Symlink(w.hostDir, w.in("opt")) },
			dst:     "/opt",
			wantErr: "dangling symlink",
		},
		{
			name: "a link in the image where a file goes",
			tree: func(w *commWorld) {
				os.MkdirAll(w.in("opt/app"), 0o755)
				os.Symlink(w.canary, w.in("opt/app/a.txt"))
			},
			dst: "/opt/app", slash: true, checkDir: "ROOT/opt/app", want: all,
		},
		{
			name: "a file in the image where a link goes",
			tree: func(w *commWorld) {
				os.MkdirAll(w.in("opt/app"), 0o755)
				os.WriteFile(w.in("opt/app/link"), []byte("old\n"), 0o644)
			},
			dst: "/opt/app", slash: true, checkDir: "ROOT/opt/app", want: all,
		},
		{
			name: "a directory in the image where a link goes",
			tree: func(w *commWorld) {
				os.MkdirAll(w.in("opt/app/link"), 0o755)
			},
			dst: "/opt/app", slash: true, wantErr: "is a directory",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newCommWorld(t, nil)
			if tc.tree != nil {
				tc.tree(w)
			}
			src := hostTree(t)
			if tc.slash {
				src += "/"
			}
			err := w.comm.UploadDir(tc.dst, src, tc.exclude)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("UploadDir error = %v, want one containing %q", err, tc.wantErr)
				}
				w.checkHost(t)
				return
			}
			if err != nil {
				t.Fatalf("UploadDir: %v", err)
			}
			dir := strings.NewReplacer("ROOT", w.dir, "HOST", w.hostDir).Replace(tc.checkDir)
			if got := listTree(t, dir); !slices.Equal(got, tc.want) {
				t.Errorf("%s holds %q, want %q", dir, got, tc.want)
			}
			w.checkHost(t)
		})
	}
}

func TestCommunicatorDownload(t *testing.T) {
	tests := []struct {
		name    string
		tree    func(w *commWorld)
		src     string
		want    string
		wantErr string
	}{
		{name: "file", tree: func(w *commWorld) { os.WriteFile(w.in("etc/hostname"), []byte("img\n"), 0o644) }, src: "/etc/hostname", want: "img\n"},
		{
			name: "absolute link to a host file resolves in the image",
			tree: func(w *commWorld) {
				os.Symlink(w.canary, w.in("etc/x"))
				os.MkdirAll(w.in(w.hostDir), 0o755)
				os.WriteFile(w.in(w.canary), []byte("the image's own\n"), 0o644)
			},
			src: "/etc/x", want: "the image's own\n",
		},
		{
			name:    "absolute link to a host file absent from the image",
			tree:    func(w *commWorld) { os.Symlink(w.canary, w.in("etc/x")) },
			src:     "/etc/x",
			wantErr: "no such file or directory",
		},
		{
			name: "climbing link",
			tree: func(w *commWorld) {
				os.Symlink(strings.Repeat("../", 20)+strings.TrimPrefix(w.canary, "/"), w.in("etc/x"))
			},
			src:     "/etc/x",
			wantErr: "no such file or directory",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newCommWorld(t, nil)
			tc.tree(w)
			var buf bytes.Buffer
			err := w.comm.Download(tc.src, &buf)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Download error = %v, want one containing %q", err, tc.wantErr)
				}
				if buf.Len() > 0 {
					t.Errorf("a failed Download wrote %q", buf.String())
				}
			} else if err != nil || buf.String() != tc.want {
				t.Errorf("Download = %q, %v; want %q", buf.String(), err, tc.want)
			}
			w.checkHost(t)
		})
	}
}

func TestCommunicatorDownloadDir(t *testing.T) {
	// imageTree is /srv/data in the image: files, and links that point
	// out of the image if followed on the host.
	imageTree := func(w *commWorld) {
		os.MkdirAll(w.in("srv/data/sub"), 0o755)
		os.WriteFile(w.in("srv/data/a.txt"), []byte("a\n"), 0o644)
		os.WriteFile(w.in("srv/data/b.log"), []byte("b\n"), 0o644)
		os.WriteFile(w.in("srv/data/sub/c.txt"), []byte("c\n"), 0o644)
		os.Symlink(w.hostDir, w.in("srv/data/hostdir"))
		os.Symlink(w.canary, w.in("srv/data/canary"))
		os.Symlink(w.canary, w.in("srv/data/sub/canary"))
		os.Symlink("/", w.in("srv/data/sub/root"))
	}
	links := func(w *commWorld) []string {
		return []string{"a.txt", "b.log", "canary -> " + w.canary, "hostdir -> " + w.hostDir,
			"sub/", "sub/c.txt", "sub/canary -> " + w.canary, "sub/root -> /"}
	}
	tests := []struct {
		name    string
		tree    func(w *commWorld)
		src     string
		exclude []string
		want    func(w *commWorld) []string
		wantErr string
	}{
		{name: "tree with links", tree: imageTree, src: "/srv/data", want: links},
		{name: "trailing slash", tree: imageTree, src: "/srv/data/", want: links},
		{name: "exclude", tree: imageTree, src: "/srv/data", exclude: []string{"*.log", "hostdir"},
			want: func(w *commWorld) []string {
				return []string{"a.txt", "canary -> " + w.canary, "sub/", "sub/c.txt", "sub/canary -> " + w.canary, "sub/root -> /"}
			}},
		{
			name: "src is an absolute link to a host dir",
			tree: func(w *commWorld) {
				os.MkdirAll(w.in("srv"), 0o755)
				os.Symlink(w.hostDir, w.in("srv/data"))
				os.MkdirAll(w.in(w.hostDir), 0o755)
				os.WriteFile(w.in(w.hostDir+"/inside.txt"), []byte("in the image\n"), 0o644)
			},
			src:  "/srv/data",
			want: func(w *commWorld) []string { return []string{"inside.txt"} },
		},
		{
			name: "src is an absolute link to a host dir, with exclude",
			tree: func(w *commWorld) {
				os.MkdirAll(w.in("srv"), 0o755)
				os.Symlink(w.hostDir, w.in("srv/data"))
				os.MkdirAll(w.in(w.hostDir), 0o755)
				os.WriteFile(w.in(w.hostDir+"/inside.txt"), []byte("in the image\n"), 0o644)
			},
			src: "/srv/data", exclude: []string{"*.log"},
			want: func(w *commWorld) []string { return []string{"inside.txt"} },
		},
		{
			name: "src is a link to a host dir absent from the image",
			tree: func(w *commWorld) {
				os.MkdirAll(w.in("srv"), 0o755)
				os.Symlink(w.hostDir, w.in("srv/data"))
			},
			src:     "/srv/data",
			wantErr: "no such file or directory",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newCommWorld(t, nil)
			tc.tree(w)
			dst := filepath.Join(t.TempDir(), "out")
			err := w.comm.DownloadDir(tc.src, dst, tc.exclude)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("DownloadDir error = %v, want one containing %q", err, tc.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("DownloadDir: %v", err)
				}
				if got, want := listTree(t, dst), tc.want(w); !slices.Equal(got, want) {
					t.Errorf("downloaded %q, want %q", got, want)
				}
				if b, err := os.ReadFile(filepath.Join(dst, "a.txt")); err == nil && string(b) != "a\n" {
					t.Errorf("a.txt = %q", b)
				}
			}
			w.checkHost(t)
		})
	}
}

// chrootWorld is a busybox tree to run commands in.
func chrootWorld(t *testing.T) *commWorld {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running commands in a chroot needs root")
	}
	w := newCommWorld(t, func(dir string) { fixture.BusyboxTree(t, dir) })
	before := fixture.LeakSnapshot()
	t.Cleanup(func() { before.AssertNoLeaksIn(t, w.dir) })
	return w
}

// run runs command in the chroot and waits for it.
func run(t *testing.T, ctx context.Context, c *Communicator, command string) (stdout, stderr string, status int) {
	t.Helper()
	var o, e bytes.Buffer
	rc := &packersdk.RemoteCmd{Command: command, Stdout: &o, Stderr: &e}
	if err := c.Start(ctx, rc); err != nil {
		t.Fatalf("Start %q: %v", command, err)
	}
	status = rc.Wait()
	return o.String(), e.String(), status
}

func TestCommunicatorStart(t *testing.T) {
	tests := []struct {
		name       string
		command    string
		wantOut    string
		wantStatus int
	}{
		{name: "output and status", command: "echo hi; exit 3", wantOut: "hi\n", wantStatus: 3},
		{name: "runs in the image", command: "cat /etc/hostname", wantOut: fixture.Hostname + "\n"},
		{name: "quotes survive", command: `printf '%s|' "a b" 'c'"'"'d'`, wantOut: "a b|c'd|"},
		{name: "user environment", command: `echo "$FOO"`, wantOut: "bar baz\n"},
		{name: "killed by a signal", command: "kill -9 $$", wantStatus: 128 + 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := chrootWorld(t)
			out, errOut, status := run(t, context.Background(), w.comm, tc.command)
			if out != tc.wantOut || status != tc.wantStatus {
				t.Errorf("%q: stdout %q, status %d; want %q, %d (stderr %q)", tc.command, out, status, tc.wantOut, tc.wantStatus, errOut)
			}
		})
	}
}

// TestCommunicatorEnvironment: the chroot sees only the builder's
// variables and the user's, nothing of the host's.
func TestCommunicatorEnvironment(t *testing.T) {
	w := chrootWorld(t)
	t.Setenv("IMAGEFACTORY_HOST_SECRET", "must not leak")
	out, errOut, status := run(t, context.Background(), w.comm, "env")
	if status != 0 {
		t.Fatalf("env: status %d: %s", status, errOut)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "PWD", "SHLVL", "OLDPWD", "_":
			continue // set by the shells themselves
		}
		got[k] = v
	}
	want := map[string]string{
		"PATH": chrootPath, "HOME": "/root", "LANG": "C.UTF-8",
		"DEBIAN_FRONTEND": "noninteractive", "TERM": "dumb", "SYSTEMD_OFFLINE": "1", "FOO": "bar baz",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("environment in the chroot:\n got  %v\n want %v", got, want)
	}
}

// TestCommunicatorCancel: cancelling the context stops the command and
// everything it started; the exit status is reported.
func TestCommunicatorCancel(t *testing.T) {
	tests := []struct {
		name    string
		command string
	}{
		{name: "sleep", command: "sleep 60"},
		{name: "background child", command: "sleep 60 & sleep 61; wait"},
		{name: "ignores SIGTERM", command: "trap '' TERM; sleep 62; sleep 63"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := chrootWorld(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var o, e bytes.Buffer
			rc := &packersdk.RemoteCmd{Command: tc.command, Stdout: &o, Stderr: &e}
			mustDo(t, w.comm.Start(ctx, rc))
			waitFor(t, 10*time.Second, func() bool { return len(rootedIn(w.dir)) > 0 && hasSleep(w.dir) })
			cancel()
			done := make(chan int, 1)
			go func() { done <- rc.Wait() }()
			select {
			case status := <-done:
				if status < 128 {
					t.Errorf("exit status %d after cancel, want a signal's (128+n)", status)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the command still runs 15 s after the cancel")
			}
			waitFor(t, 5*time.Second, func() bool { return len(rootedIn(w.dir)) == 0 })
		})
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v; processes in the root: %v", d, rootedIn("/"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rootedIn lists the processes whose root directory is dir.
func rootedIn(dir string) []int {
	var pids []int
	ents, err := os.ReadDir("/proc")
	if err != nil { // an empty answer would pass a check for leftovers
		panic(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err == nil && root == dir {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !bytes.Contains(st, []byte(") Z ")) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func hasSleep(dir string) bool {
	for _, pid := range rootedIn(dir) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.HasPrefix(b, []byte("sleep\x00")) {
			return true
		}
	}
	return false
}

// TestCommunicatorNoHostDescriptors: a descriptor the plugin process holds
// without close-on-exec (inherited from Packer, or opened by a library
// after an earlier command) never reaches the chroot.
func TestCommunicatorNoHostDescriptors(t *testing.T) {
	w := chrootWorld(t)
	proc := w.in("proc")
	mustDo(t, unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""))
	t.Cleanup(func() {
		if err := unix.Unmount(proc, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", proc, err)
		}
	})

	// A first command: whatever the communicator does once, it has done.
	if _, errOut, status := run(t, context.Background(), w.comm, "true"); status != 0 {
		t.Fatalf("true: %d %s", status, errOut)
	}

	var p [2]int
	mustDo(t, syscall.Pipe(p[:])) // pipe(2) without O_CLOEXEC
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	var st syscall.Stat_t
	mustDo(t, syscall.Fstat(p[1], &st))
	pipeName := fmt.Sprintf("pipe:[%d]", st.Ino)
	if flags, err := unix.FcntlInt(uintptr(p[1]), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Fatalf("the test pipe should start without close-on-exec: flags %d, %v", flags, err)
	}

	tests := []struct {
		name    string
		command string
		check   func(t *testing.T, out string, status int)
	}{
		{
			name:    "not listed in /proc/self/fd",
			command: "ls -l /proc/self/fd/; echo end",
			check: func(t *testing.T, out string, status int) {
				if !strings.Contains(out, "end") {
					t.Fatalf("no listing: %q", out)
				}
				if strings.Contains(out, pipeName) {
					t.Errorf("the host pipe %s is open in the chroot:\n%s", pipeName, out)
				}
			},
		},
		{
			name:    "cannot be written",
			command: fmt.Sprintf("echo escaped >&%d", p[1]),
			check: func(t *testing.T, out string, status int) {
				if status == 0 {
					t.Errorf("writing to host descriptor %d succeeded in the chroot", p[1])
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, status := run(t, context.Background(), w.comm, tc.command)
			tc.check(t, out, status)
		})
	}
	// Nothing came through the pipe.
	mustDo(t, syscall.SetNonblock(p[0], true))
	buf := make([]byte, 64)
	if n, _ := syscall.Read(p[0], buf); n > 0 {
		t.Errorf("the chroot wrote %q to a host pipe", buf[:n])
	}
}
