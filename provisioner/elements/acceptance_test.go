package elements

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// dibElements is DIB's own element set, from Debian's
// python3-diskimage-builder (scripts/install-deps.sh).
const dibElements = "/usr/lib/python3/dist-packages/diskimage_builder/elements"

// TestAccElements: packer build with the imagefactory builder and this
// provisioner on a Debian 12 disk. Two unmodified elements of DIB's own set
// run next to the project's corpus: devuser (environment.d, extra-data.d
// writing into the hooks tree, package-installs installing sudo with apt
// from Debian's archive, a pkg-map, useradd and visudo in the chroot) and
// runtime-ssh-host-keys (static/, init-scripts/ for systemd, systemctl
// enable, a cleanup.d hook using sudo on TARGET_ROOT). Then a failing
// script fails the build with one line naming it, and nothing leaks.
func TestAccElements(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	if _, err := os.Stat(dibElements); err != nil {
		t.Fatalf("DIB's elements (python3-diskimage-builder from scripts/install-deps.sh): %v", err)
	}
	corpus := corpusPath(t)
	disk := fixture.DebianMinbaseDisk(t)
	h := fixture.Packer(t)
	state := filepath.Join(h.Base, "state")
	h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+state)
	before := fixture.LeakSnapshot()
	template := func(elements string) string {
		return `
source "imagefactory" "t" {
  base_image       = "` + disk.Path + `"
  output_directory = "out-` + strings.Trim(strings.Fields(elements)[0], `",[]`) + `"
  mount_path       = "` + filepath.Join(h.Base, "mnt") + `/{{.BuildName}}"
}
build {
  sources = ["source.imagefactory.t"]
  provisioner "imagefactory-elements" {
    elements      = ` + elements + `
    elements_path = ["` + corpus + `", "` + dibElements + `"]
    environment = {
      DIB_DEV_USER_USERNAME     = "factory"
      DIB_DEV_USER_PWDLESS_SUDO = "yes"
      DIB_DEV_USER_SHELL        = "/bin/bash"
    }
  }
}
`
	}

	res := h.Build(t, template(`["devuser", "runtime-ssh-host-keys", "envd", "static", "naming", "pkgtools"]`), nil)
	if res.ExitCode != 0 {
		t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	img := filepath.Join(h.Dir, "out-devuser", "t.raw")
	root := disk.Root()
	read := func(p string) string { return string(fixture.ReadFileFromPartition(t, img, root, p)) }
	exists := func(p string) bool { return fixture.FileExistsOnDisk(t, img, root.Offset, p) }

	if !strings.Contains(read("/var/lib/dpkg/status"), "Package: sudo\nStatus: install ok installed") {
		t.Error("package-installs did not install sudo with apt")
	}
	if got := read("/etc/sudoers.d/factory"); got != "factory ALL=(ALL) NOPASSWD:ALL\n" {
		t.Errorf("/etc/sudoers.d/factory = %q", got)
	}
	if !strings.Contains(read("/etc/passwd"), "factory:x:") || !strings.Contains(read("/etc/passwd"), ":/home/factory:/bin/bash") {
		t.Error("devuser did not add the user")
	}
	if !exists("/usr/lib/systemd/system/ssh-keygen.service") || !exists("/etc/systemd/system/multi-user.target.wants/ssh-keygen.service") {
		t.Error("runtime-ssh-host-keys: ssh-keygen.service not installed and enabled")
	}
	if !exists("/usr/local/sbin/runtime-ssh-host-keys.sh") {
		t.Error("runtime-ssh-host-keys: static/ not installed")
	}
	if got := read("/root/envd.inside"); got != "inside one first second unset debian bookworm amd64 systemd source\n" {
		t.Errorf("/root/envd.inside = %q", got)
	}
	if read("/root/envd.cleanup") != "cleanup\n" || read("/etc/imagefactory-static") != "static file\n" || read("/root/naming.log") != "good\nlink\n" {
		t.Error("corpus elements did not all run")
	}
	if read("/root/pkgtools.map") != "less\n" || read("/root/pkgtools.removed") != "removed\n" {
		t.Error("install-packages -m / -e with pkg-map")
	}
	if exists("/tmp/in_target.d") {
		t.Error("/tmp/in_target.d left in the image")
	}
	for _, want := range []string{
		"Phase install.d",
		"devuser install.d/50-devuser: ",
		"package-installs install.d/01-package-installs: ",
		"install.d timings:",
		"install.d: skipping 60-dotted.sh of element naming",
	} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("packer output lacks %q", want)
		}
	}
	fixture.E2fsck(t, img, root.Offset)

	res = h.Build(t, template(`["fail"]`), nil)
	if res.ExitCode == 0 {
		t.Fatalf("a failing script did not fail the build:\n%s", res.Output)
	}
	if !strings.Contains(res.Output, "imagefactory-elements: element fail, phase install.d, script 50-fail: exited with status 3") {
		t.Errorf("the error does not name the script:\n%s", res.Output)
	}
	// Scoped to this test (its mounts are under h.Base by mount_path):
	// other builds run on the machine (their plugins would count under
	// AssertNoLeaksUnder's any-plugin rule); our own plugin processes are
	// found by their install path.
	before.AssertNoLeaksIn(t, h.Base)
	if pids := processesMentioning(h.PluginPath); len(pids) > 0 {
		t.Errorf("plugin processes left: %v", pids)
	}
	if j, _ := filepath.Glob(filepath.Join(state, "*.journal")); len(j) > 0 {
		t.Errorf("journals left: %v", j)
	}
	// The hooks tree and the rest of a run's host files are gone too.
	if tmp, _ := filepath.Glob(filepath.Join(h.Base, "tmp", "imagefactory-elements-*")); len(tmp) > 0 {
		t.Errorf("host temporary directories left: %v", tmp)
	}
}

// processesMentioning lists the processes whose command line holds s.
func processesMentioning(s string) []int {
	var pids []int
	ents, err := os.ReadDir("/proc")
	if err != nil { // an empty answer would pass a check for leftovers
		panic(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmd), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}
