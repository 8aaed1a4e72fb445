package imagefactory_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAccBootstrapFreshCacheInterrupted runs the builder's debootstrap for
// real, into a cache of its own outside the test's directory (cache_dir:
// with a cached tree debootstrap never runs), and interrupts the build
// (SIGINT to Packer's group, as Ctrl-C) once debootstrap installs the core
// packages in the chroot: by then it has mounted /proc, /sys and /dev in
// the tree and runs dpkg chrooted there. The leak check, scoped to the
// test's directory and the cache, first sees those (so it can see a leak
// there), then, after the build, sees nothing: no mount, no process
// rooted in the tree or holding its files, no loop device; no journal, no
// work directory and no tree are left. Minbase with no extra package: a
// minute or two, most of it downloading from Debian's archive.
func TestAccBootstrapFreshCacheInterrupted(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skipf("needs debootstrap (scripts/install-deps.sh): %v", err)
	}
	a := newAcc(t)
	cache := t.TempDir()
	run := a.Start(t, treeTemplate(fmt.Sprintf(`
  bootstrap {
    tool      = "debootstrap"
    suite     = "bookworm"
    variant   = "minbase"
    cache_dir = %q
  }
`, cache), marker), nil)
	run.WaitForOutput(t, "Installing core packages", 15*time.Minute)
	tree, work := bootstrapPaths(t, run.Output())
	if !strings.HasPrefix(tree, cache+"/") || !strings.HasPrefix(work, cache+"/") {
		t.Fatalf("the build did not say it makes the tree in %s:\n%s", cache, run.Output())
	}
	// What debootstrap holds now is what the check must see.
	seen := strings.Join(a.before.LeaksIn(cache), "\n")
	t.Logf("mid-debootstrap, the leak check in the cache sees %d resources", strings.Count(seen, "\n")+1)
	for _, want := range []string{"on " + filepath.Join(work, "tree/proc") + " type proc", "holding " + work} {
		if !strings.Contains(seen, want) {
			t.Errorf("mid-debootstrap, the leak check in %s does not report %q:\n%s", cache, want, seen)
		}
	}
	run.Interrupt(t, syscall.SIGINT)
	res := run.Wait()
	if res.ExitCode == 0 {
		t.Fatalf("an interrupted build succeeded:\n%s", res.Output)
	}
	a.before.AssertNoLeaksIn(t, a.Base, cache)
	if journals, _ := filepath.Glob(filepath.Join(a.state, "*.journal")); len(journals) > 0 {
		t.Errorf("journals left in %s: %v", a.state, journals)
	}
	left, _ := os.ReadDir(cache)
	for _, e := range left {
		if !strings.HasSuffix(e.Name(), ".lock") { // the tree's lock file may stay
			t.Errorf("left in the cache after the interrupt: %s", e.Name())
		}
	}
	if _, err := os.Lstat(work); err == nil {
		t.Errorf("debootstrap's work directory %s is left", work)
	}
}

// bootstrapPaths are the paths in the cache a bootstrap build said it
// uses: the tree's ("cached as"), and debootstrap's work directory, ""
// when the tree was cached and debootstrap did not run; for leak checks
// scoped to them (a shared cache may hold other builds' debootstraps).
func bootstrapPaths(t *testing.T, out string) (tree, work string) {
	t.Helper()
	m := regexp.MustCompile(`Root tree: .*, cached as (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the build did not say where its root tree is cached:\n%s", out)
	}
	if w := regexp.MustCompile(`I: Making the tree in (\S+)`).FindStringSubmatch(out); w != nil {
		work = w[1]
	}
	return m[1], work
}

// assertNoBootstrapLeaks checks the paths in the cache of a build's
// debootstrap, when it ran (the tree's too: a process left in the work
// tree has its root there once the tree is renamed into place). When the
// tree was cached, nothing of the build ran there, and other builds may be
// reading the tree.
func (a *acc) assertNoBootstrapLeaks(t *testing.T, out string) {
	t.Helper()
	if tree, work := bootstrapPaths(t, out); work != "" {
		a.before.AssertNoLeaksIn(t, tree, work)
	}
}
