package bootstrap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// fakeDebootstrap stands in for debootstrap(8) on PATH: it makes a tree
// with etc/debian_version in its last argument. As maker "a" it then
// writes into that tree until killed, recording its pid; as any other
// maker it marks the tree as its own and lingers a second, long enough for
// a maker still writing there to show.
const fakeDebootstrap = `#!/bin/sh
for tree; do :; done
mkdir -p "$tree/etc"
echo 12.0 > "$tree/etc/debian_version"
if [ "$FAKE_MAKER" = a ]; then
	echo $$ > "$FAKE_DIR/a.pid"
	while :; do { [ -d "$tree" ] && echo a > "$tree/written-by-a"; } 2>/dev/null; sleep 0.05; done
fi
echo "$FAKE_MAKER" > "$tree/made-by"
echo run >> "$FAKE_DIR/runs"
sleep 1
`

// TestTreeShared: builds that want the same tree at the same time run one
// debootstrap; the others wait and get the tree once it is whole, as
// cached.
func TestTreeShared(t *testing.T) {
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "debootstrap"), []byte(fakeDebootstrap), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
	t.Setenv("FAKE_DIR", fake)
	t.Setenv("FAKE_MAKER", "one")
	cache, state := t.TempDir(), t.TempDir()
	const builds = 3
	type result struct {
		tree   string
		cached bool
		err    error
	}
	results := make(chan result, builds)
	for range builds {
		go func() {
			j, err := cleanup.Open(state, "build")
			if err != nil {
				results <- result{err: err}
				return
			}
			defer j.Close()
			tree, cached, err := Tree(context.Background(), Options{Tool: Debootstrap, Suite: "bookworm", CacheDir: cache, Journal: j})
			if err == nil {
				// What the waiters read is whole: made-by is written last.
				if b, rerr := os.ReadFile(filepath.Join(tree, "made-by")); rerr != nil || string(b) != "one\n" {
					err = fmt.Errorf("the tree it got is not whole: made-by %q, %v", b, rerr)
				}
			}
			results <- result{tree, cached, err}
		}()
	}
	made := 0
	var trees []string
	for range builds {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !r.cached {
			made++
		}
		trees = append(trees, r.tree)
	}
	runs, _ := os.ReadFile(filepath.Join(fake, "runs"))
	if made != 1 || string(runs) != "run\n" {
		t.Errorf("%d builds made the tree, debootstrap ran %d times; want one", made, strings.Count(string(runs), "run"))
	}
	for _, tr := range trees[1:] {
		if tr != trees[0] {
			t.Errorf("builds got different trees: %v", trees)
		}
	}
}

// TestHelperMaker is not a test: TestTreeMakerKilled runs the test binary
// with it as a build that makes a tree and is killed meanwhile.
func TestHelperMaker(t *testing.T) {
	if os.Getenv("FAKE_MAKER") != "a" {
		t.Skip("a helper process of TestTreeMakerKilled")
	}
	j, err := cleanup.Open(os.Getenv("FAKE_STATE"), "maker a")
	if err != nil {
		t.Fatal(err)
	}
	Tree(context.Background(), Options{Tool: Debootstrap, Suite: "bookworm", CacheDir: os.Getenv("FAKE_CACHE"), Journal: j})
	t.Fatal("maker a was to be killed while making its tree")
}

// TestTreeMakerKilled: a build waits for the tree another build makes,
// and that build is killed (kill -9, as a CI job's timeout does). The
// waiting build makes the tree itself, and the killed one's debootstrap
// must neither outlive it nor write into the tree the waiting one makes:
// the cache must never get a tree two debootstraps wrote.
func TestTreeMakerKilled(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the reaper kills processes in chroots: root")
	}
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "debootstrap"), []byte(fakeDebootstrap), 0o755); err != nil {
		t.Fatal(err)
	}
	cache, state := t.TempDir(), t.TempDir()
	t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
	t.Setenv("FAKE_DIR", fake)

	a := exec.Command(os.Args[0], "-test.run=^TestHelperMaker$", "-test.count=1")
	a.Env = append(os.Environ(), "FAKE_MAKER=a", "FAKE_STATE="+state, "FAKE_CACHE="+cache)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan error, 1)
	go func() { aDone <- a.Wait() }()
	var orphan int
	t.Cleanup(func() {
		a.Process.Kill()
		if orphan > 0 {
			syscall.Kill(orphan, syscall.SIGKILL) // only if the test failed: then it runs
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(fake, "a.pid")); err == nil && strings.HasSuffix(string(b), "\n") {
			orphan, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("maker a's debootstrap did not start within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Build b waits for a's tree; then a is killed.
	t.Setenv("FAKE_MAKER", "b")
	j, err := cleanup.Open(state, "maker b")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	o := Options{Tool: Debootstrap, Suite: "bookworm", CacheDir: cache, Journal: j, Log: func(l string) { t.Log(l) }}
	type result struct {
		tree   string
		cached bool
		err    error
	}
	bDone := make(chan result, 1)
	go func() {
		tree, cached, err := Tree(context.Background(), o)
		bDone <- result{tree, cached, err}
	}()
	time.Sleep(300 * time.Millisecond) // b is waiting on the lock (or a bit late: the same outcome)
	a.Process.Kill()
	<-aDone
	var r result
	select {
	case r = <-bDone:
	case <-time.After(60 * time.Second):
		t.Fatal("build b did not get the tree within 60 s of a's death")
	}
	if r.err != nil || r.cached {
		t.Fatalf("build b: cached %v, %v", r.cached, r.err)
	}
	if b, _ := os.ReadFile(filepath.Join(r.tree, "made-by")); string(b) != "b\n" {
		t.Errorf("the cached tree was made by %q, want b", b)
	}
	if _, err := os.Stat(filepath.Join(r.tree, "written-by-a")); err == nil {
		t.Errorf("the killed build's debootstrap wrote into the tree build b cached")
	}
	if running(orphan) {
		t.Errorf("the killed build's debootstrap (pid %d) still runs", orphan)
	} else {
		orphan = 0
	}
	if left, _ := filepath.Glob(filepath.Join(cache, ".work-*")); len(left) > 0 {
		t.Errorf("work directories left: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "*.journal")); len(left) != 1 {
		t.Errorf("journals in the state directory: %v; want only b's", left)
	}
}

// running tells whether pid runs: it exists and is not a zombie (an
// orphan's zombie waits for whatever reaps orphans here).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
