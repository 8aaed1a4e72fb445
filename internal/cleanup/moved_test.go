package cleanup

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// imageRoot is a directory standing for a mounted image, with an
// /etc/ld.so.preload of mode 0600 and, where the filesystem takes one, an
// xattr.
func imageRoot(t *testing.T) (root string, content []byte, xattr bool) {
	t.Helper()
	root = filepath.Join(workDir(t), "image")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	content = []byte("/usr/lib/arm-linux-gnueabihf/libarmmem-${PLATFORM}.so\n")
	p := filepath.Join(root, "etc/ld.so.preload")
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	xattr = unix.Lsetxattr(p, "user.imagefactory-test", []byte("kept"), 0) == nil
	return root, content, xattr
}

func devIno(t *testing.T, p string) (dev, ino uint64) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Dev, st.Ino
}

// assertBack checks the file is at its name again: same inode, bytes,
// mode and xattr, and nothing left at the aside name.
func assertBack(t *testing.T, root string, content []byte, xattr bool, ino uint64) {
	t.Helper()
	p := filepath.Join(root, "etc/ld.so.preload")
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatalf("not put back: %v", err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, content) || fi.Mode() != 0o600 {
		t.Errorf("put back as %q mode %v, want %q mode 0600", got, fi.Mode(), content)
	}
	if _, got := devIno(t, p); got != ino {
		t.Errorf("put back with inode %d, want %d", got, ino)
	}
	if xattr {
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(p, "user.imagefactory-test", buf)
		if err != nil || string(buf[:n]) != "kept" {
			t.Errorf("xattr lost: %q %v", buf[:n], err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(root, "etc/ld.so.preload.*")); len(left) > 0 {
		t.Errorf("left in the image: %v", left)
	}
}

// TestMovedEntry: a file of an image moved aside comes back on Release,
// exactly; a new file a provisioner put in its place wins; a file that is
// not the one moved is left alone; nothing outside the image is touched.
func TestMovedEntry(t *testing.T) {
	const name, aside = "/etc/ld.so.preload", "/etc/ld.so.preload.imagefactory-orig"
	for _, tc := range []struct {
		name string
		// meanwhile runs between the move and the release; it returns
		// what Release must say.
		meanwhile func(t *testing.T, root string) string
	}{
		{"put back", func(t *testing.T, root string) string { return "back" }},
		{"a provisioner wrote a new one", func(t *testing.T, root string) string {
			os.WriteFile(filepath.Join(root, name), []byte("new\n"), 0o644)
			return "kept the new"
		}},
		{"another file at the aside name", func(t *testing.T, root string) string {
			os.Rename(filepath.Join(root, aside), filepath.Join(root, "etc/saved"))
			os.WriteFile(filepath.Join(root, aside), []byte("not ours\n"), 0o644)
			return "nothing put back"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, content, xattr := imageRoot(t)
			dev, ino := devIno(t, filepath.Join(root, name))
			j, err := Open(filepath.Join(filepath.Dir(root), "state"), "moved")
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			var msgs []string
			j.SetLogger(func(m string) { msgs = append(msgs, m) })
			h, err := j.Take(MovedEntry(root, name, aside, dev, ino))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(root, name), filepath.Join(root, aside)); err != nil {
				t.Fatal(err)
			}
			want := tc.meanwhile(t, root)
			if err := j.Release(h); err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 1 || !strings.Contains(msgs[0], want) {
				t.Errorf("Release said %q, want %q", msgs, want)
			}
			switch want {
			case "back":
				assertBack(t, root, content, xattr, ino)
			case "kept the new":
				if got, _ := os.ReadFile(filepath.Join(root, name)); string(got) != "new\n" {
					t.Errorf("the provisioner's file was replaced: %q", got)
				}
				if _, err := os.Lstat(filepath.Join(root, aside)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the old file is left at %s: %v", aside, err)
				}
			default:
				if got, _ := os.ReadFile(filepath.Join(root, aside)); string(got) != "not ours\n" {
					t.Errorf("a file that is not the one moved was touched: %q", got)
				}
			}
		})
	}
}

// TestReapPutsMovedFileBack: the build that moved the file is killed; the
// next Reap puts it back.
func TestReapPutsMovedFileBack(t *testing.T) {
	root, content, xattr := imageRoot(t)
	_, ino := devIno(t, filepath.Join(root, "etc/ld.so.preload"))
	state := filepath.Join(filepath.Dir(root), "state")
	cmd, _ := startChild(t, "moved-entry", "IF_STATE="+state, "IF_ROOT="+root)
	killChild(t, cmd)
	if _, err := os.Lstat(filepath.Join(root, "etc/ld.so.preload")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the killed build did not move the file: %v", err)
	}
	rep, err := Reap(state)
	if err != nil {
		t.Fatal(err)
	}
	if !containsLine(rep.Released, "put "+root+"/etc/ld.so.preload back") {
		t.Errorf("the report does not say the file was put back: %q", rep.Released)
	}
	assertBack(t, root, content, xattr, ino)
}

// TestMovedEntryStaysInImage: the image's /etc is a symlink to a host
// directory holding a file with the recorded inode; the release resolves
// /etc inside the image and never renames the host file.
func TestMovedEntryStaysInImage(t *testing.T) {
	dir := workDir(t)
	host := filepath.Join(dir, "host-etc")
	root := filepath.Join(dir, "image")
	os.MkdirAll(host, 0o755)
	os.MkdirAll(root, 0o755)
	victim := filepath.Join(host, "ld.so.preload.aside")
	if err := os.WriteFile(victim, []byte("host file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(root, "etc")); err != nil {
		t.Fatal(err)
	}
	dev, ino := devIno(t, victim)
	j, err := Open(filepath.Join(dir, "state"), "hostile")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	h, err := j.Take(MovedEntry(root, "/etc/ld.so.preload", "/etc/ld.so.preload.aside", dev, ino))
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Release(h); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("the host file was moved: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(host, "ld.so.preload")); err == nil {
		t.Error("a file appeared in the host directory")
	}
	if _, err := j.Take(MovedEntry("/", "/etc/ld.so.preload", "/etc/x", dev, ino)); err == nil {
		t.Error("a moved-file entry rooted at / was taken")
	}
}
