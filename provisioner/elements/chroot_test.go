package elements

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/builder/imagefactory"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

func corpusPath(t *testing.T) string {
	p, err := filepath.Abs("../../internal/elements/testdata/elements")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// chrootRun prepares and runs the provisioner on the Debian tree through
// the builder's own chroot communicator. mounted=false hides MountPath,
// as a builder reaching the image over SSH would.
func chrootRun(t *testing.T, tree string, mounted bool, cfg map[string]interface{}) (string, error) {
	t.Helper()
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	var p Provisioner
	if err := p.Prepare(cfg); err != nil {
		return "", err
	}
	root, err := inroot.Open(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	comm := &imagefactory.Communicator{Root: root, Wrapper: func(s string) (string, error) { return s, nil },
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}}
	var out bytes.Buffer
	ui := &packersdk.BasicUi{Reader: strings.NewReader(""), Writer: &out, ErrorWriter: &out}
	gen := map[string]interface{}{}
	if mounted {
		gen["MountPath"] = tree
	}
	err = p.Provision(context.Background(), ui, comm, gen)
	return out.String(), err
}

func readTree(t *testing.T, tree, p string) string {
	b, err := os.ReadFile(filepath.Join(tree, p))
	if err != nil {
		t.Errorf("%s: %v", p, err)
	}
	return string(b)
}

// assertClean: nothing of the run stays in the image, mounted on it or
// running in it (the leak check, against before).
func assertClean(t *testing.T, before fixture.Snapshot, tree string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(tree, "tmp/in_target.d")); !os.IsNotExist(err) {
		t.Errorf("/tmp/in_target.d left in the image: %v", err)
	}
	before.AssertNoLeaksIn(t, tree)
	if j, _ := filepath.Glob(filepath.Join(os.Getenv("IMAGEFACTORY_STATE_DIR"), "*.journal")); len(j) > 0 {
		t.Errorf("journals left: %v", j)
	}
}

// sources makes a file, a tarball and a git repository for the srcrepo
// element.
func sources(t *testing.T) string {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file.txt"), []byte("from file\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "t", "top"), 0o755)
	os.WriteFile(filepath.Join(dir, "t", "top", "inner.txt"), []byte("from tar\n"), 0o644)
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-C", filepath.Join(dir, "repo.git"), "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	for _, c := range [][]string{{"tar", "-C", filepath.Join(dir, "t"), "-czf", filepath.Join(dir, "src.tar.gz"), "top"}, {"git", "init", "-q", "-b", "main", filepath.Join(dir, "repo.git")}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	os.WriteFile(filepath.Join(dir, "repo.git", "README"), []byte("from git\n"), 0o644)
	git("add", "README")
	git("commit", "-q", "-m", "one")
	return dir
}

func TestProvisionInChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chroot and bind mounts")
	}
	tree := fixture.DebianTree(t)
	corpus := corpusPath(t)
	before := fixture.LeakSnapshot()

	t.Run("corpus", func(t *testing.T) {
		src := sources(t)
		for _, f := range []string{"root/order.log", "root/naming.log"} {
			os.Remove(filepath.Join(tree, f))
		}
		out, err := chrootRun(t, tree, true, map[string]interface{}{
			"elements":        []string{"order", "naming", "envd", "static", "bin", "deep-b", "srcrepo", "pkgmap"},
			"elements_path":   []string{corpus},
			"environment":     map[string]string{"IF_SRC": src},
			"exclude_scripts": []string{"install.d/100-*"},
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		checks := map[string]string{
			"root/order.log":                "foo\n1_x\n2-a\n09\n9-nine\n010-c\n10-b\n",
			"root/naming.log":               "good\nlink\n",
			"root/envd.inside":              "inside one first second unset debian bookworm amd64 systemd source\n",
			"root/envd.outside":             "outside one first second " + tree + " ",
			"root/envd.cleanup":             "cleanup\n",
			"etc/imagefactory-static":       "static file\n",
			"usr/share/imagefactory/nested": "nested\n",
			"etc/imagefactory-deep":         "from deep-b\n",
			"etc/imagefactory-deep-a":       "only a\n",
			"opt/src/file.txt":              "from file\n",
			"opt/src/tar/inner.txt":         "from tar\n",
			"opt/src/git/README":            "from git\n",
			"etc/dib-source-repositories":   "/opt/src/file.txt\n/opt/src/tar\n/opt/src/git\n",
		}
		for p, want := range checks {
			if got := readTree(t, tree, p); !strings.HasPrefix(got, want) {
				t.Errorf("%s = %q, want %q", p, got, want)
			}
		}
		if fi, err := os.Stat(filepath.Join(tree, "usr/local/bin/if-hello")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("bin/ not installed 0755: %v", err)
		}
		if _, err := os.Stat(filepath.Join(tree, "root/sudo-outside")); err != nil {
			t.Errorf("sudo outside the image: %v", err)
		}
		for _, want := range []string{
			"order install.d/10-b: ran 10-b", // prefixes
			"install.d: skipping 60-dotted.sh of element naming: name does not match",
			"install.d: skipping 70-noexec of element naming: not executable",
			"install.d: skipping 100-z of element order: exclude_scripts",
			"install.d timings:",
			"source-repositories extra-data.d/98-source-repositories: source repository if-git",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		assertClean(t, before, tree)
	})

	t.Run("failing script", func(t *testing.T) {
		os.Remove(filepath.Join(tree, "root/fail.before"))
		os.Remove(filepath.Join(tree, "root/fail.after"))
		out, err := chrootRun(t, tree, true, map[string]interface{}{
			"elements": []string{"fail"}, "elements_path": []string{corpus},
		})
		if err == nil || !strings.Contains(err.Error(), "element fail, phase install.d, script 50-fail: exited with status 3") {
			t.Fatalf("err = %v\n%s", err, out)
		}
		if !strings.Contains(out, "fail install.d/50-fail: about to fail") {
			t.Errorf("script's stderr not shown with its prefix:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(tree, "root/fail.before")); err != nil {
			t.Error("40-before did not run")
		}
		if _, err := os.Stat(filepath.Join(tree, "root/fail.after")); err == nil {
			t.Error("60-after ran after the failure")
		}
		assertClean(t, before, tree)
	})

	t.Run("not mounted: inside phases by upload", func(t *testing.T) {
		os.Remove(filepath.Join(tree, "root/order.log"))
		out, err := chrootRun(t, tree, false, map[string]interface{}{
			"elements": []string{"order"}, "elements_path": []string{corpus},
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if got := readTree(t, tree, "root/order.log"); !strings.HasPrefix(got, "foo\n1_x") {
			t.Errorf("order.log = %q", got)
		}
		assertClean(t, before, tree)
	})

	t.Run("not mounted: outside hooks refused by name", func(t *testing.T) {
		out, err := chrootRun(t, tree, false, map[string]interface{}{
			"elements": []string{"envd"}, "elements_path": []string{corpus},
		})
		if err == nil || !strings.Contains(err.Error(), "extra-data.d/10-env-outside (element envd), cleanup.d/10-cleanup-outside (element envd)") {
			t.Fatalf("err = %v\n%s", err, out)
		}
		assertClean(t, before, tree)
	})

	t.Run("bad input fails before anything runs", func(t *testing.T) {
		for _, tc := range []struct {
			els []string
			err string
		}{
			{[]string{"dup-both"}, "duplicate hook install.d/50-same"},
			{[]string{"cycle-a"}, "element-deps cycle"},
			{[]string{"two-providers"}, "already provided by prov-x"},
			{[]string{"missing"}, `element "missing" not found`},
		} {
			out, err := chrootRun(t, tree, true, map[string]interface{}{"elements": tc.els, "elements_path": []string{corpus}})
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err = %v, want %q\n%s", tc.els, err, tc.err, out)
			}
			assertClean(t, before, tree)
		}
	})
}

var _ = common.CommandWrapper(nil)
