package rootfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
)

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		u      Usage
		fstype string
		free   int64
		min    int64
	}{
		{"empty ext4", Usage{}, Ext4, 0, 16 * mib},
		{"600 MiB tree ext4", Usage{Bytes: 600 * mib, Inodes: 30000}, Ext4, 256 * mib, 856 * mib},
		{"many small files get inodes", Usage{Bytes: 100 * mib, Inodes: 200000}, Ext4, 0, 100*mib + 200000*inodeSize},
		{"small xfs is at least 300 MiB", Usage{Bytes: 10 * mib}, XFS, 0, MinXFSSize},
		{"xfs", Usage{Bytes: 900 * mib}, XFS, 100 * mib, 1000 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Size(tc.u, tc.fstype, tc.free)
			if got < tc.min || got%mib != 0 {
				t.Errorf("Size = %d, want a whole MiB of at least %d", got, tc.min)
			}
			// Not absurdly large either: at most 1.4x plus the fixed parts.
			if limit := (tc.u.Bytes+tc.free)*14/10 + 400*mib; got > limit {
				t.Errorf("Size = %d MiB, more than %d MiB", got/mib, limit/mib)
			}
		})
	}
}

// specialTree makes a tree with everything a root tree holds that a naive
// copy loses: owners, setuid, hard links, device nodes, a FIFO, a long
// symlink, an xattr and an ACL.
func specialTree(t *testing.T) string {
	t.Helper()
	tree := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(tree, "etc"), 0o755))
	must(os.MkdirAll(filepath.Join(tree, "dev"), 0o755))
	must(os.WriteFile(filepath.Join(tree, "etc/a"), []byte("hello"), 0o4755))
	must(os.Chown(filepath.Join(tree, "etc/a"), 1234, 5678)) // before chmod: chown clears setuid
	must(os.Chmod(filepath.Join(tree, "etc/a"), 0o755|os.ModeSetuid))
	must(os.Link(filepath.Join(tree, "etc/a"), filepath.Join(tree, "etc/b")))
	must(unix.Mknod(filepath.Join(tree, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mkfifo(filepath.Join(tree, "dev/fifo"), 0o600))
	long := "/" + strings.Repeat("x", 100)
	must(os.Symlink(long, filepath.Join(tree, "etc/long")))
	must(unix.Setxattr(filepath.Join(tree, "etc/a"), "user.imagefactory", []byte("kept"), 0))
	if out, err := exec.Command("setfacl", "-m", "u:4321:r", filepath.Join(tree, "etc/b")).CombinedOutput(); err != nil {
		t.Fatalf("setfacl: %v %s", err, out)
	}
	return tree
}

func checkSpecialTree(t *testing.T, dir string) {
	t.Helper()
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "etc/a"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(dir, "etc/b"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link lost: inodes %d and %d, %d links", a.Ino, b.Ino, a.Nlink)
	}
	if a.Uid != 1234 || a.Gid != 5678 || a.Mode&0o7777 != 0o4755 {
		t.Errorf("etc/a: owner %d:%d mode %o, want 1234:5678 4755", a.Uid, a.Gid, a.Mode&0o7777)
	}
	var dev unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "dev/null"), &dev); err != nil || dev.Mode&unix.S_IFMT != unix.S_IFCHR || dev.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("dev/null: %v, mode %o rdev %x; want a char device 1:3", err, dev.Mode, dev.Rdev)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "dev/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("dev/fifo: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "etc/long")); err != nil || l != "/"+strings.Repeat("x", 100) {
		t.Errorf("etc/long: %q %v", l, err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(dir, "etc/a"), "user.imagefactory", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("xattr user.imagefactory: %q %v", buf[:max(n, 0)], err)
	}
	out, err := exec.Command("getfacl", "-cn", filepath.Join(dir, "etc/b")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "user:4321:r--") {
		t.Errorf("ACL lost: %s %v", out, err)
	}
}

// withMounted attaches and mounts the filesystem at offset read-only.
func withMounted(t *testing.T, disk string, offset, size int64, fstype string, f func(dir string)) {
	t.Helper()
	dev, err := loop.Attach(disk, offset, size, true)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Detach()
	dir := t.TempDir()
	if err := unix.Mount(dev.Path(), dir, fstype, unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("mount %s: %v", fstype, err)
	}
	defer unix.Unmount(dir, 0)
	f(dir)
}

func TestMakeKeepsEverything(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (device nodes, owners, loop devices)")
	}
	tree := specialTree(t)
	u, err := Measure(tree)
	if err != nil {
		t.Fatal(err)
	}
	if u.Inodes != 7 { // /, etc, dev, a (b is its link), long, null, fifo
		t.Errorf("Measure counted %d inodes, want 7", u.Inodes)
	}
	for _, fstype := range []string{Ext4, XFS} {
		t.Run(fstype, func(t *testing.T) {
			snap := fixture.LeakSnapshot()
			const offset = 1 << 20
			size := Size(u, fstype, 0)
			disk := fixture.SparseFile(t, offset+size)
			spec := Spec{Type: fstype, Label: DefaultLabel(fstype), UUID: "5b0b8f3c-4f5e-4a53-9d1a-3c9e2f0a7b11", Usage: u}
			ctx := context.Background()
			switch fstype {
			case Ext4:
				if err := MakeExt4(ctx, disk, offset, size, tree, spec); err != nil {
					t.Fatal(err)
				}
			case XFS:
				j, err := cleanup.Open(t.TempDir(), t.Name())
				if err != nil {
					t.Fatal(err)
				}
				err = MakeXFS(ctx, j, disk, offset, size, tree, filepath.Join(t.TempDir(), "mnt"), spec)
				if cerr := j.Close(); cerr != nil {
					t.Error(cerr)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			out, _ := exec.Command("blkid", "-p", "-O", "1048576", "-o", "export", disk).CombinedOutput()
			if !strings.Contains(string(out), "LABEL="+spec.Label) || !strings.Contains(string(out), "UUID="+spec.UUID) {
				t.Errorf("blkid: want label %s and UUID %s:\n%s", spec.Label, spec.UUID, out)
			}
			withMounted(t, disk, offset, size, fstype, func(dir string) { checkSpecialTree(t, dir) })
			snap.AssertNoLeaksIn(t, filepath.Dir(disk))
		})
	}
}

func TestMakeExt4TooSmall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	tree := t.TempDir()
	big := make([]byte, 40<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>9)
	}
	if err := os.WriteFile(filepath.Join(tree, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	disk := fixture.SparseFile(t, 1<<20+16*mib)
	err := MakeExt4(context.Background(), disk, 1<<20, 16*mib, tree, Spec{Type: Ext4, Label: LabelExt4, UUID: "5b0b8f3c-4f5e-4a53-9d1a-3c9e2f0a7b11"})
	if err == nil || !strings.Contains(err.Error(), ErrNoSpace.Error()) {
		t.Fatalf("MakeExt4 of 40 MiB into 16 MiB: %v, want %v", err, ErrNoSpace)
	}
}

func TestExtractNotATarball(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rootfs.tar.gz")
	if err := os.WriteFile(p, []byte("this is not a tarball\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Extract(context.Background(), p, filepath.Join(t.TempDir(), "tree"))
	if err == nil || !strings.Contains(err.Error(), "is not a tarball") {
		t.Fatalf("Extract: %v", err)
	}
}
