package chrootprep

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// hostResolv is what the "host" resolver configuration holds in these tests.
const hostResolv = "# the build host's resolv.conf\nnameserver 198.51.100.1\n"

// imageResolv is the image's own resolver configuration.
const imageResolv = "# the image's own resolv.conf\nnameserver 192.0.2.53\n"

// fixedTime is an mtime no test run produces by accident.
var fixedTime = time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)

// entry is everything about one directory entry that must come back
// exactly: the inode itself, its type, mode, owner, mtime and content (a
// regular file's bytes or a symlink's target).
type entry struct {
	exists   bool
	ino      uint64
	mode     os.FileMode
	uid, gid uint32
	mtime    time.Time
	content  string
}

func snap(t *testing.T, path string) entry {
	t.Helper()
	fi, err := os.Lstat(path)
	if os.IsNotExist(err) {
		return entry{}
	}
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	e := entry{exists: true, ino: st.Ino, mode: fi.Mode(), uid: st.Uid, gid: st.Gid, mtime: fi.ModTime()}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		e.content, err = os.Readlink(path)
	case fi.Mode().IsRegular():
		var b []byte
		b, err = os.ReadFile(path)
		e.content = string(b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(content), mode))
	must(t, os.Chmod(path, mode))
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.Symlink(target, path))
}

// stamp gives path (not what it points to) a distinctive owner and mtime,
// so that a restore that recreates instead of renaming shows.
func stamp(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() == 0 {
		must(t, os.Lchown(path, 123, 456))
	}
	ts := []unix.Timespec{unix.NsecToTimespec(fixedTime.UnixNano()), unix.NsecToTimespec(fixedTime.UnixNano())}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW))
}

// world is one test's image root and host side.
type world struct {
	dir      string // the image root on the host
	root     *inroot.Root
	hostFile string // the host's resolver configuration
	hostDir  string // a host directory outside the root, with canaries
	canary   string // a host file outside the root
}

const canaryContent = "host canary: must never change\n"

func newWorld(t *testing.T) *world {
	t.Helper()
	base := t.TempDir()
	w := &world{
		dir:      filepath.Join(base, "root"),
		hostFile: filepath.Join(base, "host", "resolv.conf"),
		hostDir:  filepath.Join(base, "host", "dir"),
		canary:   filepath.Join(base, "host", "canary.conf"),
	}
	must(t, os.MkdirAll(filepath.Join(w.dir, "etc"), 0o755))
	must(t, os.MkdirAll(filepath.Join(w.dir, "tmp"), 0o1777))
	writeFile(t, w.hostFile, hostResolv, 0o644)
	writeFile(t, w.canary, canaryContent, 0o640)
	writeFile(t, filepath.Join(w.hostDir, "keep"), canaryContent, 0o640)
	return w
}

func (w *world) open(t *testing.T) {
	t.Helper()
	r, err := inroot.Open(w.dir)
	must(t, err)
	t.Cleanup(func() { r.Close() })
	w.root = r
}

func (w *world) path(name string) string { return filepath.Join(w.dir, name) }

// hostState records the host canaries, to compare before and after.
func (w *world) hostState(t *testing.T) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	for _, p := range []string{w.canary, w.hostFile, w.hostDir, filepath.Join(w.hostDir, "keep")} {
		out[p] = snap(t, p)
	}
	ents, err := os.ReadDir(w.hostDir)
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	out["ls "+w.hostDir] = entry{exists: true, content: strings.Join(names, " ")}
	return out
}

func checkHost(t *testing.T, before, after map[string]entry) {
	t.Helper()
	for k, b := range before {
		if a := after[k]; a != b {
			t.Errorf("host file %s changed:\n before %+v\n after  %+v", k, b, a)
		}
	}
}

func TestCopyResolvConf(t *testing.T) {
	const stub = "/run/systemd/resolve/stub-resolv.conf"
	tests := []struct {
		name  string
		setup func(t *testing.T, w *world)
		// provision runs between CopyResolvConf and Restore, as a
		// provisioner would.
		provision func(t *testing.T, w *world)
		wantErr   string // CopyResolvConf fails with this
		// want is the entry after Restore; nil: exactly as before.
		want func(t *testing.T, w *world, before entry)
		// watch lists more paths in the image that must not change at all
		// (a symlink's target must never be written through).
		watch []string
	}{
		{
			name: "regular file",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path("etc/resolv.conf"), imageResolv, 0o600)
				stamp(t, w.path("etc/resolv.conf"))
			},
		},
		{
			name: "relative symlink to a file",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path("run/resolvconf/resolv.conf"), imageResolv, 0o644)
				symlink(t, "../run/resolvconf/resolv.conf", w.path("etc/resolv.conf"))
				stamp(t, w.path("etc/resolv.conf"))
			},
			watch: []string{"run/resolvconf/resolv.conf"},
		},
		{
			name: "absolute symlink to a file",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path(stub), imageResolv, 0o644)
				symlink(t, stub, w.path("etc/resolv.conf"))
				stamp(t, w.path("etc/resolv.conf"))
			},
			watch: []string{stub},
		},
		{
			name: "dangling symlink",
			setup: func(t *testing.T, w *world) {
				symlink(t, stub, w.path("etc/resolv.conf"))
				stamp(t, w.path("etc/resolv.conf"))
			},
			watch: []string{stub, "run"},
		},
		{
			name: "absolute symlink to a host file",
			setup: func(t *testing.T, w *world) {
				symlink(t, w.canary, w.path("etc/resolv.conf"))
			},
			watch: []string{"CANARY"}, // must not appear inside the image either
		},
		{
			name:  "absent",
			setup: func(t *testing.T, w *world) {},
		},
		{
			name: "absent, no /etc",
			setup: func(t *testing.T, w *world) {
				must(t, os.Remove(w.path("etc")))
			},
		},
		{
			name: "provisioner replaced the file",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path("etc/resolv.conf"), imageResolv, 0o644)
			},
			provision: func(t *testing.T, w *world) {
				writeFile(t, w.path("etc/resolv.conf.new"), "nameserver 203.0.113.9\n", 0o644)
				must(t, os.Rename(w.path("etc/resolv.conf.new"), w.path("etc/resolv.conf")))
			},
			want: func(t *testing.T, w *world, before entry) {
				if got := snap(t, w.path("etc/resolv.conf")); got.content != "nameserver 203.0.113.9\n" {
					t.Errorf("the provisioner's resolv.conf was not kept: %+v", got)
				}
			},
		},
		{
			name: "provisioner rewrote the file in place",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path("etc/resolv.conf"), imageResolv, 0o644)
			},
			provision: func(t *testing.T, w *world) {
				must(t, os.WriteFile(w.path("etc/resolv.conf"), []byte("nameserver 203.0.113.9\n"), 0o644))
			},
			want: func(t *testing.T, w *world, before entry) {
				if got := snap(t, w.path("etc/resolv.conf")); got.content != "nameserver 203.0.113.9\n" {
					t.Errorf("the provisioner's resolv.conf was not kept: %+v", got)
				}
			},
		},
		{
			name: "provisioner replaced it with a symlink",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path("etc/resolv.conf"), imageResolv, 0o644)
			},
			provision: func(t *testing.T, w *world) {
				must(t, os.Remove(w.path("etc/resolv.conf")))
				symlink(t, stub, w.path("etc/resolv.conf"))
			},
			want: func(t *testing.T, w *world, before entry) {
				if got := snap(t, w.path("etc/resolv.conf")); got.mode&os.ModeSymlink == 0 || got.content != stub {
					t.Errorf("the provisioner's symlink was not kept: %+v", got)
				}
			},
		},
		{
			name: "provisioner deleted it",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path("etc/resolv.conf"), imageResolv, 0o644)
			},
			provision: func(t *testing.T, w *world) {
				must(t, os.Remove(w.path("etc/resolv.conf")))
			},
			want: func(t *testing.T, w *world, before entry) {
				if got := snap(t, w.path("etc/resolv.conf")); got.exists {
					t.Errorf("a resolv.conf the provisioner deleted came back: %+v", got)
				}
			},
		},
		{
			name: "leftover backup",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path("etc/resolv.conf"), imageResolv, 0o644)
				writeFile(t, w.path("etc/resolv.conf"+backupSuffix), "left by a killed build\n", 0o644)
			},
			wantErr: "/etc/resolv.conf" + backupSuffix + " already exists in the image",
			watch:   []string{"etc/resolv.conf" + backupSuffix},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(t, w)
			w.open(t)
			host := w.hostState(t)
			before := snap(t, w.path("etc/resolv.conf"))
			watched := map[string]entry{}
			for _, p := range tc.watch {
				p = strings.Replace(p, "CANARY", w.canary, 1)
				watched[p] = snap(t, w.path(p))
			}

			restore, err := CopyResolvConf(w.root, w.hostFile)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("CopyResolvConf error = %v, want one containing %q", err, tc.wantErr)
				}
				if after := snap(t, w.path("etc/resolv.conf")); after != before {
					t.Errorf("a failed CopyResolvConf changed /etc/resolv.conf:\n before %+v\n after  %+v", before, after)
				}
			} else {
				if err != nil {
					t.Fatalf("CopyResolvConf: %v", err)
				}
				during := snap(t, w.path("etc/resolv.conf"))
				if !during.mode.IsRegular() || during.mode.Perm() != 0o644 || during.content != hostResolv {
					t.Errorf("during the build /etc/resolv.conf = %+v, want a 0644 regular file with the host's content", during)
				}
				if tc.provision != nil {
					tc.provision(t, w)
				}
				if err := restore(); err != nil {
					t.Fatalf("Restore: %v", err)
				}
				if err := restore(); err != nil {
					t.Fatalf("second Restore: %v", err)
				}
				if tc.want != nil {
					tc.want(t, w, before)
				} else if after := snap(t, w.path("etc/resolv.conf")); after != before {
					t.Errorf("/etc/resolv.conf not restored exactly:\n before %+v\n after  %+v", before, after)
				}
				if b := snap(t, w.path("etc/resolv.conf"+backupSuffix)); b.exists {
					t.Errorf("backup left in the image: %+v", b)
				}
			}
			for p, b := range watched {
				if a := snap(t, w.path(p)); a != b {
					t.Errorf("%s in the image changed:\n before %+v\n after  %+v", p, b, a)
				}
			}
			leftovers, _ := filepath.Glob(w.path("etc/.resolv.conf.inroot-*"))
			if len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
			checkHost(t, host, w.hostState(t))
		})
	}
}

// TestRestoreRetriedAfterFailure: a Restore whose final rename failed
// (here: the backup was briefly gone) must put the original back when
// retried, not mistake the empty name for a deletion by a provisioner.
func TestRestoreRetriedAfterFailure(t *testing.T) {
	w := newWorld(t)
	writeFile(t, w.path("etc/resolv.conf"), imageResolv, 0o600)
	stamp(t, w.path("etc/resolv.conf"))
	w.open(t)
	before := snap(t, w.path("etc/resolv.conf"))

	restore, err := CopyResolvConf(w.root, w.hostFile)
	must(t, err)
	backup := w.path("etc/resolv.conf" + backupSuffix)
	aside := filepath.Join(w.dir, "aside")
	must(t, os.Rename(backup, aside))
	if err := restore(); err == nil || !strings.Contains(err.Error(), "restoring the image's /etc/resolv.conf") {
		t.Fatalf("Restore without its backup: error = %v, want a restore error", err)
	}
	must(t, os.Rename(aside, backup))
	if err := restore(); err != nil {
		t.Fatalf("retried Restore: %v", err)
	}
	if after := snap(t, w.path("etc/resolv.conf")); after != before {
		t.Errorf("retried Restore did not bring the original back:\n before %+v\n after  %+v", before, after)
	}
}

// TestCopyResolvConfHostile: the image's /etc is an absolute symlink. It
// must resolve inside the image, never to the host directory it names.
func TestCopyResolvConfHostile(t *testing.T) {
	tests := []struct {
		name    string
		etc     func(w *world) string // /etc's symlink target
		inRoot  bool                  // the target exists inside the root too
		wantErr bool
	}{
		{name: "/etc -> /tmp", etc: func(w *world) string { return "/tmp" }, inRoot: true},
		{name: "/etc -> host dir, absent in the image", etc: func(w *world) string { return w.hostDir }, wantErr: true},
		{name: "/etc -> host dir, present in the image", etc: func(w *world) string { return w.hostDir }, inRoot: true},
		{name: "/etc -> ../../.. host dir", etc: func(w *world) string { return strings.Repeat("../", 16) + strings.TrimPrefix(w.hostDir, "/") }, inRoot: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			target := tc.etc(w)
			must(t, os.Remove(w.path("etc")))
			must(t, os.Symlink(target, w.path("etc")))
			inside := filepath.Join(w.dir, filepath.Clean("/"+strings.ReplaceAll(target, "../", "")))
			if tc.inRoot {
				must(t, os.MkdirAll(inside, 0o755))
			}
			w.open(t)
			host := w.hostState(t)
			hostTmp := map[string]entry{}
			for _, n := range []string{"/tmp/resolv.conf", "/tmp/resolv.conf" + backupSuffix} {
				hostTmp[n] = snap(t, n)
			}

			restore, err := CopyResolvConf(w.root, w.hostFile)
			if tc.wantErr {
				if err == nil {
					restore()
					t.Fatal("CopyResolvConf through a dangling /etc succeeded")
				}
			} else {
				if err != nil {
					t.Fatalf("CopyResolvConf: %v", err)
				}
				got, err := os.ReadFile(filepath.Join(inside, "resolv.conf"))
				if err != nil || string(got) != hostResolv {
					t.Errorf("resolv.conf did not land at %s inside the image: %q, %v", inside, got, err)
				}
				must(t, restore())
				if e := snap(t, filepath.Join(inside, "resolv.conf")); e.exists {
					t.Errorf("Restore left %s/resolv.conf", inside)
				}
			}
			checkHost(t, host, w.hostState(t))
			for n, b := range hostTmp {
				if a := snap(t, n); a != b {
					t.Errorf("host %s changed:\n before %+v\n after  %+v", n, b, a)
				}
			}
		})
	}
}

func TestBindTarget(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, w *world)
		wantErr string
	}{
		{"regular file", func(t *testing.T, w *world) { writeFile(t, w.path("etc/resolv.conf"), imageResolv, 0o644) }, ""},
		{"symlink", func(t *testing.T, w *world) { symlink(t, "../run/x", w.path("etc/resolv.conf")) }, "not a regular file"},
		{"absent", func(t *testing.T, w *world) {}, "has no /etc/resolv.conf"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(t, w)
			w.open(t)
			err := BindTarget(w.root)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("BindTarget = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestBlockServices(t *testing.T) {
	const policy = "usr/sbin/policy-rc.d"
	debian := func(t *testing.T, w *world) { writeFile(t, w.path("etc/debian_version"), "12.0\n", 0o644) }
	tests := []struct {
		name    string
		setup   func(t *testing.T, w *world)
		wantOK  bool
		wantErr string
		// during is where policy-rc.d must be while blocked (default
		// usr/sbin/policy-rc.d).
		during string
		// after is the entry at usr/sbin/policy-rc.d after Restore; nil:
		// exactly as before.
		after func(t *testing.T, w *world)
	}{
		{
			name: "debian, no policy-rc.d",
			setup: func(t *testing.T, w *world) {
				debian(t, w)
				must(t, os.MkdirAll(w.path("usr/sbin"), 0o755))
			},
			wantOK: true,
		},
		{
			name:   "debian, no /usr/sbin",
			setup:  debian,
			wantOK: true,
		},
		{
			name: "debian, own policy-rc.d",
			setup: func(t *testing.T, w *world) {
				debian(t, w)
				writeFile(t, w.path(policy), "#!/bin/sh\nexit 0\n", 0o700)
				stamp(t, w.path(policy))
			},
			wantOK: true,
		},
		{
			name: "debian, policy-rc.d is a symlink",
			setup: func(t *testing.T, w *world) {
				debian(t, w)
				writeFile(t, w.path("usr/share/policy"), "#!/bin/sh\nexit 0\n", 0o755)
				symlink(t, "/usr/share/policy", w.path(policy))
				stamp(t, w.path(policy))
			},
			wantOK: true,
		},
		{
			name: "debian, policy-rc.d identical to ours",
			setup: func(t *testing.T, w *world) {
				debian(t, w)
				writeFile(t, w.path(policy), string(policyRcDContent), 0o755)
				stamp(t, w.path(policy))
			},
			wantOK: true,
		},
		{
			name: "debian, leftover backup",
			setup: func(t *testing.T, w *world) {
				debian(t, w)
				writeFile(t, w.path(policy+backupSuffix), "#!/bin/sh\nexit 0\n", 0o755)
			},
			wantErr: backupSuffix + " already exists",
		},
		{
			name: "not debian",
			setup: func(t *testing.T, w *world) {
				writeFile(t, w.path("etc/redhat-release"), "Fedora release 40\n", 0o644)
				must(t, os.MkdirAll(w.path("usr/sbin"), 0o755))
			},
			after: func(t *testing.T, w *world) {
				if e := snap(t, w.path(policy)); e.exists {
					t.Errorf("policy-rc.d created on a non-Debian image: %+v", e)
				}
			},
		},
		{
			name: "debian_version only reachable on the host",
			setup: func(t *testing.T, w *world) {
				// /etc/debian_version -> a host file: Lstat sees a link,
				// which still says "Debian"; nothing is read through it.
				symlink(t, w.canary, w.path("etc/debian_version"))
				must(t, os.MkdirAll(w.path("usr/sbin"), 0o755))
			},
			wantOK: true,
		},
		{
			name: "/usr/sbin -> host dir, absent in the image",
			setup: func(t *testing.T, w *world) {
				debian(t, w)
				symlink(t, w.hostDir, w.path("usr/sbin"))
			},
			wantErr: "creating /usr/sbin in the image",
		},
		{
			name: "/usr/sbin -> host dir, present in the image",
			setup: func(t *testing.T, w *world) {
				debian(t, w)
				symlink(t, w.hostDir, w.path("usr/sbin"))
				must(t, os.MkdirAll(filepath.Join(w.dir, w.hostDir), 0o755))
			},
			wantOK: true,
			during: "HOSTDIR/policy-rc.d",
			after: func(t *testing.T, w *world) {
				if e := snap(t, filepath.Join(w.dir, w.hostDir, "policy-rc.d")); e.exists {
					t.Errorf("policy-rc.d left in the image: %+v", e)
				}
			},
		},
		{
			name: "/etc -> /tmp",
			setup: func(t *testing.T, w *world) {
				must(t, os.Remove(w.path("etc")))
				must(t, os.Symlink("/tmp", w.path("etc")))
				writeFile(t, w.path("tmp/debian_version"), "12.0\n", 0o644)
				must(t, os.MkdirAll(w.path("usr/sbin"), 0o755))
			},
			wantOK: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(t, w)
			w.open(t)
			host := w.hostState(t)
			hostPolicy := snap(t, "/usr/sbin/policy-rc.d")
			before := snap(t, w.path(policy))
			backup := snap(t, w.path(policy+backupSuffix))

			restore, did, err := BlockServices(w.root)
			ok := len(did) > 0
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("BlockServices error = %v, want one containing %q", err, tc.wantErr)
				}
				if ok {
					t.Error("BlockServices failed but reported ok")
				}
				if a := snap(t, w.path(policy+backupSuffix)); a != backup {
					t.Errorf("a failed BlockServices touched the backup:\n before %+v\n after  %+v", backup, a)
				}
			} else {
				if err != nil {
					t.Fatalf("BlockServices: %v", err)
				}
				if ok != tc.wantOK {
					t.Errorf("BlockServices ok = %v, want %v", ok, tc.wantOK)
				}
				if tc.wantOK {
					during := tc.during
					if during == "" {
						during = policy
					}
					during = strings.Replace(during, "HOSTDIR", w.hostDir, 1)
					e := snap(t, w.path(during))
					if !e.mode.IsRegular() || e.mode.Perm() != 0o755 || e.content != string(policyRcDContent) {
						t.Errorf("while blocked, %s = %+v, want our 0755 script", during, e)
					}
				}
				must(t, restore())
				must(t, restore())
				if tc.after != nil {
					tc.after(t, w)
				} else if a := snap(t, w.path(policy)); a != before {
					t.Errorf("policy-rc.d not restored exactly:\n before %+v\n after  %+v", before, a)
				}
				if a := snap(t, w.path(policy+backupSuffix)); a.exists {
					t.Errorf("backup left in the image: %+v", a)
				}
			}
			checkHost(t, host, w.hostState(t))
			if a := snap(t, "/usr/sbin/policy-rc.d"); a != hostPolicy {
				t.Errorf("the host's /usr/sbin/policy-rc.d changed:\n before %+v\n after  %+v", hostPolicy, a)
			}
			if got, err := os.ReadFile(w.canary); err != nil || !bytes.Equal(got, []byte(canaryContent)) {
				t.Errorf("host canary changed: %q, %v", got, err)
			}
		})
	}
}

// TestPolicyRcDRefuses runs the script we put in place: it must exit 101,
// Debian's "action forbidden".
func TestPolicyRcDRefuses(t *testing.T) {
	w := newWorld(t)
	writeFile(t, w.path("etc/debian_version"), "12.0\n", 0o644)
	w.open(t)
	restore, did, err := BlockServices(w.root)
	must(t, err)
	defer restore()
	if len(did) == 0 {
		t.Fatal("not blocked")
	}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh on the host to run the script with")
	}
	err = exec.Command("/bin/sh", w.path(PolicyRcD), "nginx", "start").Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 101 {
		t.Errorf("policy-rc.d: %v, want exit status 101", err)
	}
}
