package selinux

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// TestChangedFilesystems checks, on each filesystem images use, that every
// kind of change a provisioner makes sets the inode's ctime, so the walk
// finds it: a rename (of a file, of a directory), a chmod, a chown, a
// setxattr, a hard link, a write in place; and that a directory which only
// gained an entry is not reported itself.
func TestChangedFilesystems(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mkfs, mount)")
	}
	for _, fs := range []struct {
		name string
		mkfs []string
	}{
		{"ext4", []string{"mkfs.ext4", "-q", "-F"}},
		{"xfs", []string{"mkfs.xfs", "-q", "-f"}},
		{"btrfs", []string{"mkfs.btrfs", "-q", "-f"}},
	} {
		t.Run(fs.name, func(t *testing.T) {
			if _, err := exec.LookPath(fs.mkfs[0]); err != nil {
				t.Skipf("%s is not installed: %v", fs.mkfs[0], err)
			}
			img := filepath.Join(t.TempDir(), "fs.img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 320<<20); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(fs.mkfs[0], append(fs.mkfs[1:], img)...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", fs.mkfs, err, out)
			}
			dir := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
				t.Fatalf("mount: %v\n%s", err, out)
			}
			t.Cleanup(func() {
				if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
					t.Errorf("umount: %v\n%s", err, out)
				}
			})
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			p := func(s string) string { return filepath.Join(dir, s) }
			for _, d := range []string{"etc", "srv/old", "srv/dir/sub", "usr/bin"} {
				must(os.MkdirAll(p(d), 0o755))
			}
			for _, f := range []string{"etc/a", "etc/b", "etc/c", "etc/d", "etc/e", "etc/f", "srv/dir/sub/x", "usr/bin/tool"} {
				must(os.WriteFile(p(f), []byte("x"), 0o644))
			}
			root, err := inroot.Open(dir)
			must(err)
			defer root.Close()
			snap, err := Snap(root, nil)
			must(err)

			must(os.Rename(p("etc/a"), p("etc/a2")))                  // rename a file
			must(os.Chmod(p("etc/b"), 0o600))                         // chmod
			must(os.Chown(p("etc/c"), 1, 1))                          // chown
			must(unix.Setxattr(p("etc/d"), "user.x", []byte("1"), 0)) // setxattr
			must(os.Link(p("etc/e"), p("usr/bin/e-link")))            // hard link: both names
			f, err := os.OpenFile(p("etc/f"), os.O_WRONLY|os.O_APPEND, 0)
			must(err)
			_, err = f.WriteString("more") // write in place
			must(err)
			must(f.Close())
			must(os.Rename(p("srv/dir"), p("srv/old/moved"))) // rename a directory: its subtree
			must(os.WriteFile(p("usr/bin/new"), []byte("n"), 0o755))

			ch, err := snap.Changed(root)
			must(err)
			want := []string{"/etc/a2", "/etc/b", "/etc/c", "/etc/d", "/etc/e", "/etc/f", "/srv/old/moved", "/usr/bin/e-link", "/usr/bin/new"}
			if !reflect.DeepEqual(ch.Paths, want) {
				t.Errorf("changed = %q\nwant      %q", ch.Paths, want)
			}
			if ch.Trees != 1 {
				t.Errorf("trees = %d, want 1 (/srv/old/moved)", ch.Trees)
			}
		})
	}
}
