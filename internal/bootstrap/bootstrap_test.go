package bootstrap

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
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
	o := Options{Tool: Debootstrap, Suite: "bookworm", Variant: "minbase", Journal: journal(t), Log: func(string) {}}
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
	if _, err := os.Stat(WorkDir(o)); err == nil {
		t.Errorf("work directory left: %s", WorkDir(o))
	}
	// Scoped to this key's paths: other builds may bootstrap meanwhile.
	before.AssertNoLeaksIn(t, WorkDir(o), o.Path())
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
				procMounted = strings.Contains(string(mi), " "+filepath.Join(WorkDir(o), "tree/proc")+" ")
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
	for _, p := range []string{o.Path(), WorkDir(o)} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left after the cancel", p)
		}
	}
	before.AssertNoLeaksIn(t, o.CacheDir)
}
