package bootstrap

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

func TestKey(t *testing.T) {
	a := Options{Tool: Debootstrap, Suite: "bookworm", Variant: "minbase", Include: []string{"b", "a"}}
	b := Options{Tool: Debootstrap, Suite: "bookworm", Variant: "minbase", Include: []string{"a", "b"}}
	if a.Key() != b.Key() {
		t.Error("the order of include changes the key")
	}
	for _, o := range []Options{
		{Tool: Debootstrap, Suite: "trixie", Variant: "minbase", Include: []string{"a", "b"}},
		{Tool: Debootstrap, Suite: "bookworm", Variant: "buildd", Include: []string{"a", "b"}},
		{Tool: Debootstrap, Suite: "bookworm", Variant: "minbase", Include: []string{"a"}},
	} {
		if o.Key() == a.Key() {
			t.Errorf("%+v has the key of %+v", o, a)
		}
	}
	a.CacheDir = "/c"
	if p := a.Path(); !strings.HasPrefix(p, "/c/debootstrap-bookworm-minbase-") {
		t.Errorf("Path = %s", p)
	}
	// The host's own architecture, named or not, keeps the key trees
	// cached before arch existed were made under.
	host := a
	host.Arch = arch.Host()
	if host.Key() != a.Key() || host.Foreign() {
		t.Errorf("naming the host's arch changes the key: %s, %s", host.Key(), a.Key())
	}
	foreign := a
	foreign.Arch = arch.ARM64
	if arch.Host() == arch.ARM64 {
		foreign.Arch = arch.AMD64
	}
	if foreign.Key() == a.Key() || !foreign.Foreign() {
		t.Errorf("a foreign arch has the host's key")
	}
	if p := foreign.Path(); !strings.HasPrefix(p, "/c/debootstrap-bookworm-minbase-"+string(foreign.Arch)+"-") {
		t.Errorf("foreign Path = %s", p)
	}
}

func journal(t *testing.T) *cleanup.Journal {
	t.Helper()
	j, err := cleanup.Open(t.TempDir(), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	})
	return j
}

func TestTreeCached(t *testing.T) {
	o := Options{Tool: Debootstrap, Suite: "bookworm", CacheDir: t.TempDir(), Journal: journal(t)}
	os.MkdirAll(filepath.Join(o.Path(), "etc"), 0o755)
	tree, cached, err := Tree(context.Background(), o)
	if err != nil || !cached || tree != o.Path() {
		t.Fatalf("Tree = %s, %v, %v", tree, cached, err)
	}
	o.Tool = "mmdebstrap"
	if _, _, err := Tree(context.Background(), o); err == nil {
		t.Error("an unknown tool was accepted")
	}
}

// TestTreeDebootstrap runs the real debootstrap (minbase, no extra
// packages) into the shared cache ($IMAGEFACTORY_CACHE, else
// /var/cache/imagefactory: the first run on a machine bootstraps, about 7
// minutes on 2 loaded cores; later runs find it), then checks the tree,
// that a second call finds it cached, and that nothing debootstrap mounted
// or left running remains.
func TestTreeDebootstrap(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("runs debootstrap (minutes, root, Debian's archive)")
	}
	before := fixture.LeakSnapshot()
	var works workDirs
	o := Options{Tool: Debootstrap, Suite: "bookworm", Variant: "minbase", Journal: journal(t), Log: works.log(nil)}
	tree, cached, err := Tree(context.Background(), o)
	if err != nil {
		t.Fatalf("Tree: %v", err)
	}
	t.Logf("tree %s (cached: %v)", tree, cached)
	if b, err := os.ReadFile(filepath.Join(tree, "etc/debian_version")); err != nil || !strings.HasPrefix(string(b), "12") {
		t.Errorf("etc/debian_version: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "etc/hostname")); string(b) != "localhost\n" {
		t.Errorf("hostname %q: the build host's leaked in", b)
	}
	if _, cached, err := Tree(context.Background(), o); err != nil || !cached {
		t.Errorf("second call: cached %v, %v", cached, err)
	}
	if left, _ := filepath.Glob(WorkGlob(o)); len(left) > 0 {
		t.Errorf("work directories left: %v", left)
	}
	// Scoped to this key's paths: other builds may bootstrap meanwhile.
	// A cached tree ran nothing here, and other builds may be reading it.
	if !cached {
		before.AssertNoLeaksIn(t, append(works.dirs, o.Path())...)
	}
}

// TestTreeCancelled cancels a real debootstrap once it has mounted /proc
// and the rest in the tree ("Installing core packages"), in a cache of its
// own: Tree returns the cancellation, and neither the work directory, a
// tree under the final name, a mount nor a process in it is left.
func TestTreeCancelled(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("runs debootstrap (a minute or two, root, Debian's archive)")
	}
	before := fixture.LeakSnapshot()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lines []string
	procMounted := false
	var o Options
	o = Options{Tool: Debootstrap, Suite: "bookworm", Variant: "minbase", CacheDir: t.TempDir(), Journal: journal(t),
		Log: func(line string) {
			lines = append(lines, line)
			if strings.Contains(line, "Installing core packages") && ctx.Err() == nil {
				// Something to tear down, or the test shows nothing.
				mi, _ := os.ReadFile("/proc/self/mountinfo")
				works, _ := filepath.Glob(WorkGlob(o))
				procMounted = len(works) == 1 && strings.Contains(string(mi), " "+filepath.Join(works[0], "tree/proc")+" ")
				cancel()
			}
		}}
	_, _, err := Tree(ctx, o)
	if err == nil {
		t.Fatal("a cancelled debootstrap made a tree")
	}
	if !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("error %q does not say it was cancelled; debootstrap said:\n%s", err, strings.Join(lines, "\n"))
	}
	if ctx.Err() == nil {
		t.Fatalf("debootstrap ended before it installed anything:\n%s", strings.Join(lines, "\n"))
	}
	if !procMounted {
		t.Errorf("debootstrap had not mounted /proc in the tree when it was cancelled")
	}
	works, _ := filepath.Glob(WorkGlob(o))
	for _, p := range append(works, o.Path()) {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left after the cancel", p)
		}
	}
	before.AssertNoLeaksIn(t, o.CacheDir)
}

// arm64Include is the package list of the arm64 tests' tree: a kernel,
// sshd and the GRUB arm64-efi modules the disk's boot loader is made from
// (an amd64 host cannot install grub-efi-arm64-bin). The acceptance test
// and the bench use the same list, hence the same cached tree.
var arm64Include = []string{"systemd-sysv", "udev", "linux-image-arm64", "openssh-server", "grub-efi-arm64-bin"}

// TestTreeDebootstrapArm64 makes an arm64 bookworm tree on this host
// (debootstrap --foreign, then the second stage in the chroot under
// qemu-aarch64-static through binfmt_misc) into the shared cache, then
// checks that its binaries are arm64, that it has its kernel, initrd and
// GRUB modules, that a second call finds it cached, that no interpreter
// was left in the tree and the host's binfmt_misc registrations are as
// they were, and that nothing mounted or started is left. The first run
// on a machine takes many minutes (the second stage configures every
// package under emulation); later runs find the tree. In `make test` the
// builder package's tests have made it already, in the background.
func TestTreeDebootstrapArm64(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("runs debootstrap under qemu-user (many minutes, root, Debian's archive)")
	}
	if arch.Host() == arch.ARM64 {
		t.Skip("the host is arm64: not a foreign tree")
	}
	if _, err := os.Stat("/usr/bin/qemu-aarch64-static"); err != nil {
		t.Skip("qemu-user-static is not installed")
	}
	before := fixture.LeakSnapshot()
	regs := fixture.Binfmt(t)
	made := 0 // initramfs images made, seen in debootstrap's output
	var works workDirs
	o := Options{Tool: Debootstrap, Suite: "bookworm", Variant: "minbase", Arch: arch.ARM64, Include: arm64Include, Journal: journal(t),
		Log: works.log(func(l string) {
			if strings.Contains(l, "update-initramfs: Generating") {
				made++
			}
			if strings.HasPrefix(l, "I: Second stage") || strings.HasPrefix(l, "I: initramfs") {
				t.Log(l)
			}
		})}
	start := time.Now()
	tree, cached, err := Tree(context.Background(), o)
	if err != nil {
		t.Fatalf("Tree: %v", err)
	}
	t.Logf("tree %s (cached: %v) in %s", tree, cached, time.Since(start).Round(time.Second))
	r, err := inroot.Open(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if a, err := arch.OfImage(r); err != nil || a != arch.ARM64 {
		t.Errorf("the tree's binaries: %s, %v", a, err)
	}
	for _, glob := range []string{"boot/vmlinuz-*-arm64", "boot/initrd.img-*-arm64", "usr/lib/grub/arm64-efi/moddep.lst", "usr/sbin/sshd"} {
		if m, _ := filepath.Glob(filepath.Join(tree, glob)); len(m) == 0 {
			t.Errorf("no %s in the tree", glob)
		}
	}
	if !cached {
		// Made once, after the second stage: none in dpkg's configure
		// run (debootstrap's log, kept as /var/log/bootstrap.log).
		b, _ := os.ReadFile(filepath.Join(tree, "var/log/bootstrap.log"))
		if n := strings.Count(string(b), "update-initramfs: Generating") + made; n != 1 {
			t.Errorf("the initramfs was made %d times, want once", n)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(tree, "usr/bin/qemu-*")); len(m) > 0 {
		t.Errorf("an interpreter was left in the tree: %v", m)
	}
	if b, err := os.ReadFile(filepath.Join(tree, "var/lib/dpkg/status")); err != nil || strings.Contains(string(b), "half-configured") || strings.Contains(string(b), "unpacked") {
		t.Errorf("dpkg status: packages not configured (%v)", err)
	}
	if _, cached, err := Tree(context.Background(), o); err != nil || !cached {
		t.Errorf("second call: cached %v, %v", cached, err)
	}
	// As before, but for what builds running beside this test (the
	// builder package's, under make test) hold meanwhile.
	fixture.CheckBinfmt(t, regs)
	if !cached { // a cached tree ran nothing here, and other builds may be reading it
		before.AssertNoLeaksIn(t, append(works.dirs, o.Path())...)
	}
}

// workDirs collects the work directories Tree names in its log, for leak
// checks scoped to them.
type workDirs struct{ dirs []string }

// log returns an Options.Log that records them and passes every line to
// next (nil: none).
func (w *workDirs) log(next func(string)) func(string) {
	return func(l string) {
		if d, ok := strings.CutPrefix(l, workLog); ok {
			w.dirs = append(w.dirs, d)
		}
		if next != nil {
			next(l)
		}
	}
}
