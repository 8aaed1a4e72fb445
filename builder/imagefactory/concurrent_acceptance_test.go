package imagefactory_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// Many builds on one runner: several `packer build` processes at once, and
// -parallel-builds within one, on the same base image, sharing what a
// runner shares (the state directory and its reaper, the temporary
// directory, the default mount paths under /run/imagefactory/mnt, the loop
// devices). Each process has its own Packer harness (template, log,
// plugin cache) as separate jobs of a CI runner would.

// runnerMnt is where builds mount by default (builder.go renderMountPath).
const runnerMnt = "/run/imagefactory/mnt"

// runner is a set of Packer harnesses sharing one state directory and one
// temporary directory.
type runner struct {
	before  fixture.Snapshot
	shared  string // state/ and tmp/ of every harness
	bases   []string
	prefix  string // every source name starts with it: the default mount paths are runnerMnt/<name>-<random>
	plugins string // the harnesses' plugin directory
	outputs map[string][]string
}

func newRunner(t *testing.T, prefix string) *runner {
	requireRoot(t)
	r := &runner{before: fixture.LeakSnapshot(), shared: t.TempDir(), prefix: prefix, outputs: map[string][]string{}}
	for _, d := range []string{"state", "tmp"} {
		if err := os.MkdirAll(filepath.Join(r.shared, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// harness is a Packer harness whose journals and temporary files go to
// the runner's shared directories.
func (r *runner) harness(t *testing.T) *fixture.Harness {
	h := fixture.Packer(t)
	tmp := filepath.Join(r.shared, "tmp")
	h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(r.shared, "state"), "TMPDIR="+tmp, "PACKER_TMP_DIR="+tmp)
	r.bases = append(r.bases, h.Base)
	r.plugins = h.PluginPath
	return h
}

// expect records the only files a build's output directory may hold: the
// artifact files and each one's SBOM (<file>.spdx.json).
func (r *runner) expect(dir string, files ...string) {
	for _, f := range files {
		r.outputs[dir] = append(r.outputs[dir], f, f+".spdx.json")
	}
}

// assertClean checks that nothing the runner's builds made is left: no
// loop device backed by their files, no mount, no process (plugin,
// qemu-storage-daemon, chroot), no journal, no mount directory, no
// temporary file, nothing in an output directory but the artifact. Other
// builds on the machine (other tests, other checkouts) are not looked at.
func (r *runner) assertClean(t *testing.T) {
	t.Helper()
	// Scoped to our directories and our plugin: other checkouts on the
	// machine run builds with plugins of their own meanwhile.
	r.before.AssertNoLeaksIn(t, append([]string{r.shared}, r.bases...)...)
	if ps := fixture.Pgrep(t, regexp.QuoteMeta(r.plugins+"/")); ps != "" {
		t.Errorf("plugin processes left running:\n%s", ps)
	}
	mps, err := cleanup.MountPointsUnder(runnerMnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		if strings.HasPrefix(mp, filepath.Join(runnerMnt, r.prefix)) {
			t.Errorf("still mounted: %s", mp)
		}
	}
	// A process left in a chroot has its root at the default mount path.
	roots, _ := filepath.Glob("/proc/[0-9]*/root")
	for _, link := range roots {
		if root, err := os.Readlink(link); err == nil && strings.HasPrefix(root, filepath.Join(runnerMnt, r.prefix)) {
			t.Errorf("process %s left in a chroot: root %s", filepath.Base(filepath.Dir(link)), root)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(runnerMnt, r.prefix+"*")); len(left) > 0 {
		t.Errorf("mount directories left: %v", left)
	}
	for _, d := range []string{"state", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(r.shared, d)); len(ents) > 0 {
			t.Errorf("left in the shared %s directory: %v", d, names(ents))
		}
	}
	for dir, want := range r.outputs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Errorf("output directory: %v", err)
			continue
		}
		if got := names(ents); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("output directory %s holds %v, want only %v", dir, got, want)
		}
	}
}

func names(ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// markerBuild is a build block whose shell provisioner leaves the build's
// name in the image and holds the chroot a moment, so that the builds'
// chroots overlap.
func markerBuild(sources ...string) string {
	return fmt.Sprintf(`
build {
  sources = [%s]
  provisioner "shell" {
    inline = ["echo $PACKER_BUILD_NAME > /etc/factory-marker", "sleep 2", "test \"$(cat /etc/factory-marker)\" = $PACKER_BUILD_NAME"]
  }
}
`, `"source.imagefactory.`+strings.Join(sources, `", "source.imagefactory.`)+`"`)
}

// TestAccConcurrentBuilds runs `packer build` processes at once on one
// runner: two chroot builds on the same base image (raw and qcow2
// artifacts), one disk made from a root tree, and application images
// chained on an artifact of that base (use_backing_file: a qcow2 overlay
// over a FUSE export), two of them on the same artifact. All pass, each image holds its own build's marker,
// the base is untouched, and nothing of any of them is left.
func TestAccConcurrentBuilds(t *testing.T) {
	r := newRunner(t, "ccb")
	base := fixture.NewDisk(t, fixture.DiskOptions{Tree: debianTree})
	baseSum := fixture.Sha256(t, base.Path)
	tree, kernel := treeWithKernel(t)

	// The chained build's base: an artifact of the same base image, made
	// first (a factory's nightly base build).
	hb := r.harness(t)
	mustBuildIn(t, hb, fmt.Sprintf(`
source "imagefactory" "ccbbase" {
  base_image       = %q
  output_directory = "out"
  format           = "qcow2"
}
`, base.Path)+markerBuild("ccbbase"))
	chainBase := filepath.Join(hb.Dir, "out", "ccbbase.qcow2")
	chainSum := fixture.Sha256(t, chainBase)
	r.expect(filepath.Join(hb.Dir, "out"), "ccbbase.qcow2")

	builds := []struct {
		name, source, artifact string
	}{
		{"ccbone", fmt.Sprintf("base_image = %q", base.Path), "ccbone.raw"},
		{"ccbtwo", fmt.Sprintf("base_image = %q\n  format = \"qcow2\"\n  disk_size = \"320M\"", base.Path), "ccbtwo.qcow2"},
		{"ccbtree", fmt.Sprintf("source_rootfs = %q\n  kernel = %q", tree, kernel), "ccbtree.raw"},
		{"ccbchain", fmt.Sprintf("base_image = %q\n  use_backing_file = true", chainBase), "ccbchain.qcow2"},
		// A second overlay on the same backing file at the same time: two
		// FUSE exports (qemu-storage-daemon) share the base read-only.
		{"ccbchaintwo", fmt.Sprintf("base_image = %q\n  use_backing_file = true", chainBase), "ccbchaintwo.qcow2"},
	}
	runs := make([]*fixture.Run, len(builds))
	hs := make([]*fixture.Harness, len(builds))
	for i, b := range builds {
		hs[i] = r.harness(t)
		r.expect(filepath.Join(hs[i].Dir, "out"), b.artifact)
	}
	// Started back to back (Start does not wait), so the four plugins
	// reap, attach loop devices and mount at the same time.
	for i, b := range builds {
		runs[i] = hs[i].Start(t, fmt.Sprintf(`
source "imagefactory" %q {
  %s
  output_directory = "out"
}
`, b.name, b.source)+markerBuild(b.name), nil)
	}
	failed := false
	for i, b := range builds {
		res := runs[i].Wait()
		if res.ExitCode != 0 {
			failed = true
			t.Errorf("build %s failed (exit %d):\n%s", b.name, res.ExitCode, res.Output)
			continue
		}
		t.Logf("build %s: %s", b.name, res.Duration.Round(time.Second))
	}
	if !failed {
		for i, b := range builds {
			checkMarker(t, filepath.Join(hs[i].Dir, "out", b.artifact), b.name, base, b.name == "ccbtree")
		}
		for i := 3; i < len(builds); i++ {
			if b := backingFile(t, filepath.Join(hs[i].Dir, "out", builds[i].artifact)); b != chainBase {
				t.Errorf("the chained image %s's backing file is %q, want %s", builds[i].name, b, chainBase)
			}
		}
	}
	if fixture.Sha256(t, base.Path) != baseSum {
		t.Error("the shared base image changed")
	}
	if fixture.Sha256(t, chainBase) != chainSum {
		t.Error("the chained build's base artifact changed")
	}
	r.assertClean(t)
}

// TestAccParallelBuildsFlag runs one template of three sources (two on the
// same base image, one from a root tree) with -parallel-builds=2: Packer
// runs two at a time in one process; all pass and nothing is left.
func TestAccParallelBuildsFlag(t *testing.T) {
	r := newRunner(t, "pbf")
	base := fixture.NewDisk(t, fixture.DiskOptions{Tree: debianTree})
	tree, kernel := treeWithKernel(t)
	h := r.harness(t)
	h.BuildFlags = []string{"-parallel-builds=2"}
	res := mustBuildIn(t, h, fmt.Sprintf(`
source "imagefactory" "pbfone" {
  base_image       = %[1]q
  output_directory = "out-one"
}
source "imagefactory" "pbftwo" {
  base_image       = %[1]q
  output_directory = "out-two"
  format           = "qcow2"
}
source "imagefactory" "pbftree" {
  source_rootfs    = %[2]q
  kernel           = %[3]q
  output_directory = "out-tree"
}
`, base.Path, tree, kernel)+markerBuild("pbfone", "pbftwo", "pbftree"))
	for _, b := range []struct{ name, dir, artifact string }{
		{"pbfone", "out-one", "pbfone.raw"},
		{"pbftwo", "out-two", "pbftwo.qcow2"},
		{"pbftree", "out-tree", "pbftree.raw"},
	} {
		r.expect(filepath.Join(h.Dir, b.dir), b.artifact)
		checkMarker(t, filepath.Join(h.Dir, b.dir, b.artifact), b.name, base, b.name == "pbftree")
		if !strings.Contains(res.Output, "imagefactory."+b.name) {
			t.Errorf("build %s did not report:\n%s", b.name, res.Output)
		}
	}
	r.assertClean(t)
}

// treeWithKernel is a small root tree (busybox) and a kernel file given
// by path, for builds from a tree.
func treeWithKernel(t *testing.T) (tree, kernel string) {
	tree = t.TempDir()
	fixture.BusyboxTree(t, tree)
	kernel = filepath.Join(t.TempDir(), "vmlinuz-test")
	if err := os.WriteFile(kernel, []byte("a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	return tree, kernel
}

// checkMarker checks that the artifact img (any format) holds the marker
// of build name on a clean root filesystem: base's root, or the last
// partition of a disk made from a tree.
func checkMarker(t *testing.T, img, name string, base fixture.DiskInfo, fromTree bool) {
	t.Helper()
	if qemuImgFormat(t, img) != "raw" {
		img = toRaw(t, img)
	}
	root := base.Root()
	if fromTree {
		root = lastPartition(t, img, "ext4")
	}
	if got := readOut(t, img, root, "/etc/factory-marker"); got != name+"\n" {
		t.Errorf("image %s: marker %q", name, got)
	}
	fixture.FsckPartition(t, img, root)
}

// mustBuildIn runs packer build in h and fails the test if it fails.
func mustBuildIn(t *testing.T, h *fixture.Harness, tmpl string) fixture.Result {
	t.Helper()
	res := h.Build(t, tmpl, nil)
	if res.ExitCode != 0 {
		t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	return res
}

// TestAccConcurrentMountPath: two builds of one template with a fixed
// mount_path at the same time. The second is refused at once, naming
// mount_path, rather than mounting its image over the first's (whose
// provisioners would then run in it); the first is untouched and passes.
func TestAccConcurrentMountPath(t *testing.T) {
	r := newRunner(t, "cmp")
	base := fixture.NewDisk(t, fixture.DiskOptions{Tree: debianTree})
	mnt := filepath.Join(r.shared, "mnt")
	tmpl := func(name string) string {
		return fmt.Sprintf(`
source "imagefactory" %q {
  base_image       = %q
  output_directory = "out"
  mount_path       = %q
}
build {
  sources = ["source.imagefactory.%s"]
  provisioner "shell" {
    inline = ["echo $PACKER_BUILD_NAME > /etc/factory-marker", "echo FACTORY-WAITING", "while [ ! -e /tmp/go-on ]; do sleep 0.1; done"]
  }
}
`, name, base.Path, mnt, name)
	}
	h1, h2 := r.harness(t), r.harness(t)
	first := h1.Start(t, tmpl("cmpone"), nil)
	first.WaitForOutput(t, "FACTORY-WAITING", 5*time.Minute)
	res := h2.Build(t, tmpl("cmptwo"), nil)
	if res.ExitCode == 0 {
		t.Errorf("a second build mounted on the mount_path a running build holds:\n%s", res.Output)
	}
	if !strings.Contains(res.Output, "mount_path "+mnt+" is in use") {
		t.Errorf("the refusal does not name mount_path %s:\n%s", mnt, res.Output)
	}
	// The first build's image is still the one at the mount path.
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/factory-marker")); err != nil || string(b) != "cmpone\n" {
		t.Errorf("the mount path shows marker %q (%v), want the first build's", b, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "tmp/go-on"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := first.Wait(); res.ExitCode != 0 {
		t.Fatalf("the first build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	checkMarker(t, filepath.Join(h1.Dir, "out", "cmpone.raw"), "cmpone", base, false)
	r.expect(filepath.Join(h1.Dir, "out"), "cmpone.raw")
	if _, err := os.Stat(filepath.Join(h2.Dir, "out")); err == nil {
		t.Error("the refused build left its output directory")
	}
	if _, err := os.Stat(mnt); err == nil {
		t.Errorf("mount_path %s left behind", mnt)
	}
	r.assertClean(t)
}
