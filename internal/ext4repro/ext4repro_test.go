package ext4repro

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/loop"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

const (
	mkfsTime = 1600000000 // the base filesystem's time, before the epoch
	epoch    = 1700000000 // the build's SOURCE_DATE_EPOCH; the writes happen now, after it
	fsUUID   = "3f1b7c52-0c53-4a59-9d1e-6c7d1f0f2a11"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (e2fsprogs)", tool)
		}
	}
}

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// baseImage makes an ext4 filesystem image with every identifier and time
// fixed, as a base image is before a build.
func baseImage(t *testing.T, path string, features string, made int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, []string{fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", made)}, "mkfs.ext4", "-q", "-F", "-b", "4096",
		"-O", features, "-U", fsUUID, "-E", "hash_seed="+fsUUID, path, "64M") // lazy_itable_init, as on most base images
}

// mounted runs work on the filesystem image loop-mounted with data.
func mounted(t *testing.T, img, data string, work func(dir string)) {
	t.Helper()
	dev, err := loop.Attach(img, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Detach()
	dir := t.TempDir()
	if err := unix.Mount(dev.Path(), dir, "ext4", 0, data); err != nil {
		t.Fatalf("mount %s (%s): %v", img, data, err)
	}
	defer func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount: %v", err)
		}
	}()
	if err := Tune(dev.Path()); err != nil {
		t.Fatal(err)
	}
	work(dir)
}

// provision writes through the kernel what a provisioner writes: new
// directories (one large enough for an htree and an extent tree block),
// small and large files, a symlink, a hard link, a rename, an overwrite,
// and deletions of new and of existing files.
func provision(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	write := func(name string, n int) {
		t.Helper()
		must(os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
		must(os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte(name+"\n"), n/(len(name)+1)+1)[:n], 0o644))
	}
	write("etc/motd", 100)
	write("usr/share/doc/big.bin", 3<<20)
	for i := 0; i < 400; i++ {
		write(fmt.Sprintf("var/lib/many/file-with-a-long-name-%04d", i), 10+i)
	}
	write("tmp/deleteme", 1<<20)
	must(os.Remove(filepath.Join(dir, "tmp/deleteme")))
	// A name that differs from build to build, gone by the end (Packer's
	// shell provisioner uploads /tmp/script_NNNN.sh): its bytes stay in the
	// directory block unless cleared.
	script := fmt.Sprintf("tmp/script_%d.sh", time.Now().UnixNano()%10000)
	write(script, 300)
	write("tmp/kept", 10)
	must(os.Remove(filepath.Join(dir, script)))
	must(os.Remove(filepath.Join(dir, "old/removed")))
	write("old/kept", 5000) // overwrite an existing file
	must(os.Symlink("../etc/motd", filepath.Join(dir, "usr/motd-link")))
	must(os.Link(filepath.Join(dir, "etc/motd"), filepath.Join(dir, "etc/motd.hard")))
	must(os.Rename(filepath.Join(dir, "var/lib/many/file-with-a-long-name-0007"), filepath.Join(dir, "var/renamed")))
	// A file whose extents overflow the inode: a tree block with a checksum.
	f, err := os.Create(filepath.Join(dir, "usr/share/doc/sparse"))
	must(err)
	for i := int64(0); i < 10; i++ {
		_, err := f.WriteAt([]byte("x"), i*64*4096)
		must(err)
	}
	must(f.Close())
}

// prepared is a base filesystem with a few files older than the epoch.
func prepared(t *testing.T, path, features string, made int64) {
	baseImage(t, path, features, made)
	mounted(t, path, "", func(dir string) {
		for _, n := range []string{"old/removed", "old/kept"} {
			if err := os.MkdirAll(filepath.Join(dir, "old"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
				t.Fatal(err)
			}
			old := time.Unix(made, 0)
			os.Chtimes(filepath.Join(dir, n), old, old)
		}
	})
	// The base's own times and generations, as a base image made before the
	// epoch has them.
	if _, err := Normalize(Region{Path: path}, repro.New(made, "base")); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNormalizeTwoBuilds(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		name, features string
		made           int64 // the base's time
	}{
		{"metadata_csum", "metadata_csum,64bit", mkfsTime},
		{"orphan_file", "metadata_csum,64bit,orphan_file", mkfsTime},
		{"no_csum", "^metadata_csum,uninit_bg", mkfsTime},
		// A base image newer than the epoch: every inode is clamped and
		// gets a derived generation, lost+found and the orphan file's
		// included.
		{"base newer than the epoch", "metadata_csum,64bit,orphan_file", epoch + 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmp := t.TempDir()
			base := filepath.Join(tmp, "base.img")
			prepared(t, base, c.features, c.made)
			src := repro.New(epoch, "build")
			var imgs []string
			for i := 0; i < 2; i++ {
				img := filepath.Join(tmp, fmt.Sprintf("build%d.img", i))
				copyFile(t, base, img)
				mounted(t, img, MountData("ext4"), func(dir string) { provision(t, dir) })
				rep, err := Normalize(Region{Path: img}, src)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("build %d: %+v", i, rep)
				if rep.Inodes == 0 || rep.Generations == 0 || rep.JournalBytes == 0 {
					t.Errorf("build %d: nothing normalized: %+v", i, rep)
				}
				if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
					t.Errorf("e2fsck -fn after Normalize: %v\n%s", err, out)
				}
				imgs = append(imgs, img)
				time.Sleep(1100 * time.Millisecond) // the second build's writes at another second
			}
			if d := diff(t, imgs[0], imgs[1]); d != "" {
				t.Errorf("two builds differ after Normalize:\n%s", d)
			}
			st := run(t, nil, "debugfs", "-R", "stat /usr/share/doc/big.bin", imgs[0])
			want := fmt.Sprintf("Generation: %d", src.Uint32(fmt.Sprintf("ext4/%s/generation/%d", fsUUID, inodeNumber(t, imgs[0], "/usr/share/doc/big.bin"))))
			if !strings.Contains(st, want) {
				t.Errorf("debugfs stat: want %q:\n%s", want, st)
			}
			for _, re := range []string{`(?m)^ ?[acm]time: 0x6553f100:00000000`, `(?m)^crtime: 0x6553f100:00000000`} {
				if !regexp.MustCompile(re).MatchString(st) {
					t.Errorf("debugfs stat: no %s (the epoch, no nanoseconds):\n%s", re, st)
				}
			}
			old := run(t, nil, "debugfs", "-R", "stat /old", imgs[0])
			if c.made < epoch && !strings.Contains(old, "crtime: 0x5f5e1000:") {
				t.Errorf("an inode made before the epoch lost its crtime:\n%s", old)
			}
			other := filepath.Join(tmp, "other.img")
			copyFile(t, base, other)
			mounted(t, other, MountData("ext4"), func(dir string) { provision(t, dir) })
			if _, err := Normalize(Region{Path: other}, repro.New(epoch+1, "build")); err != nil {
				t.Fatal(err)
			}
			if diff(t, imgs[0], other) == "" {
				t.Error("another epoch gave the same bytes")
			}
		})
	}
}

func inodeNumber(t *testing.T, img, path string) int {
	out := run(t, nil, "debugfs", "-R", "stat "+path, img)
	var n int
	if _, err := fmt.Sscanf(out[strings.Index(out, "Inode:"):], "Inode: %d", &n); err != nil {
		t.Fatalf("debugfs stat %s: %v\n%s", path, err, out)
	}
	return n
}

// diff names the 4 KiB blocks where two filesystem images differ ("" when
// equal), with the inode debugfs says owns each (at most 20).
func diff(t *testing.T, a, b string) string {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(x, y) {
		return ""
	}
	var blocks []string
	for blk := 0; blk*4096 < len(x) && len(blocks) < 20; blk++ {
		p, q := x[blk*4096:(blk+1)*4096], y[blk*4096:(blk+1)*4096]
		if bytes.Equal(p, q) {
			continue
		}
		first := 0
		for p[first] == q[first] {
			first++
		}
		own, _ := exec.Command("debugfs", "-R", fmt.Sprintf("icheck %d", blk), a).Output()
		fields := strings.Fields(string(own))
		owner := fields[len(fields)-1]
		if _, err := fmt.Sscanf(owner, "%d", new(int)); err == nil {
			name, _ := exec.Command("debugfs", "-R", "ncheck "+owner, a).Output()
			if f := strings.Fields(string(name)); len(f) > 3 {
				owner += " " + strings.Join(f[3:], " ")
			}
		}
		blocks = append(blocks, fmt.Sprintf("block %d (bytes +%#x..): inode %s:\n%x\n%x", blk, first, owner, p[first:min(first+32, 4096)], q[first:min(first+32, 4096)]))
	}
	return strings.Join(blocks, "\n")
}

func TestNormalizeErrors(t *testing.T) {
	needRoot(t)
	tmp := t.TempDir()
	zeros := filepath.Join(tmp, "zeros")
	if err := os.WriteFile(zeros, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Normalize(Region{Path: zeros}, repro.New(epoch, "b")); !errors.Is(err, ErrNotExt4) {
		t.Errorf("zeros: %v, want ErrNotExt4", err)
	}
	img := filepath.Join(tmp, "img")
	baseImage(t, img, "metadata_csum", mkfsTime)
	before, _ := os.ReadFile(img)
	if rep, err := Normalize(Region{Path: img}, nil); err != nil || rep != (Report{}) {
		t.Errorf("nil Source: %+v %v", rep, err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Error("a nil Source changed the image")
	}
	run(t, nil, "debugfs", "-w", "-R", "ssv state 0", img) // as a crash leaves it
	if _, err := Normalize(Region{Path: img}, repro.New(epoch, "b")); !errors.Is(err, ErrUnclean) {
		t.Errorf("unclean: %v, want ErrUnclean", err)
	}
	unclean, _ := os.ReadFile(img)
	if _, err := Normalize(Region{Path: img}, repro.New(epoch, "b")); !errors.Is(err, ErrUnclean) {
		t.Errorf("unclean, twice: %v", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(unclean, after) {
		t.Error("an unclean filesystem was written")
	}
}

// TestClampTimes: on what mke2fs -d made with its clock at the epoch,
// ClampTimes clamps the tree's later times (an earlier mtime is kept), the
// checksums stay right, and it leaves Normalize nothing to change but the
// journal's sequence: what it skips (the journal's blocks, the free
// blocks, directories, generations) needs nothing after mke2fs.
func TestClampTimes(t *testing.T) {
	needRoot(t)
	tmp := t.TempDir()
	tree := filepath.Join(tmp, "tree")
	for i := 0; i < 40; i++ {
		p := filepath.Join(tree, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, 5000*i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := filepath.Join(tree, "d0", "f00")
	if err := os.Chtimes(old, time.Unix(mkfsTime, 0), time.Unix(mkfsTime, 0)); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(tmp, "img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, []string{fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", epoch)}, "mkfs.ext4", "-q", "-F", "-b", "4096",
		"-O", "metadata_csum,64bit", "-U", fsUUID, "-E", "hash_seed="+fsUUID+",nodiscard", "-d", tree, img, "64M")

	src := repro.New(epoch, "b")
	rep, err := ClampTimes(Region{Path: img}, src)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Inodes < 44 || rep.JournalBytes != 0 || rep.FreeBytes != 0 || rep.Generations != 0 {
		t.Errorf("report %+v: want every file and directory of the tree clamped, nothing else", rep)
	}
	run(t, nil, "e2fsck", "-fn", img)
	for path, mtime := range map[string]int64{"/d1/f01": epoch, "/d1": epoch, "/d0/f00": mkfsTime} {
		st := run(t, nil, "debugfs", "-R", "stat "+path, img)
		for _, want := range []string{fmt.Sprintf("ctime: 0x%08x:00000000", epoch), fmt.Sprintf("mtime: 0x%08x:00000000", mtime)} {
			if !strings.Contains(st, want) {
				t.Errorf("%s: no %q in\n%s", path, want, st)
			}
		}
	}

	clamped, _ := os.ReadFile(img)
	norm := filepath.Join(tmp, "norm")
	copyFile(t, img, norm)
	if _, err := Normalize(Region{Path: norm}, src); err != nil {
		t.Fatal(err)
	}
	normalized, _ := os.ReadFile(norm)
	var jblk int64
	out := strings.Fields(run(t, nil, "debugfs", "-R", "bmap <8> 0", img)) // after debugfs's banner
	if len(out) == 0 {
		t.Fatal("debugfs bmap printed nothing")
	}
	if _, err := fmt.Sscan(out[len(out)-1], &jblk); err != nil {
		t.Fatalf("the journal's first block: %v", err)
	}
	for off := int64(0); off < int64(len(clamped)); off += 4096 {
		if off/4096 != jblk && !bytes.Equal(clamped[off:off+4096], normalized[off:off+4096]) {
			t.Errorf("Normalize after ClampTimes changed block %d (the journal superblock is %d)", off/4096, jblk)
		}
	}
}
