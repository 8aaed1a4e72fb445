package scrub_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestAccRPMFamily: one packer build of the Rocky 9 tree: a shell
// provisioner in the chroot calls service(8) on a SysV service, which must
// not run (the build wraps service and puts the image's back), then the
// scrub post-processor with its defaults, whose outcome is checked on the
// mounted output image as in the unit test.
func TestAccRPMFamily(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	h := fixture.Packer(t)
	before := fixture.LeakSnapshot()
	h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
	disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) { fixture.RPMFamilyFiles(t, dir) }})
	res := h.Build(t, `
source "imagefactory" "t" {
  base_image       = "`+disk.Path+`"
  output_directory = "out"
}
build {
  sources = ["source.imagefactory.t"]
  provisioner "shell" {
    inline = [
      "service ifprobe start",
      "test ! -e /started-ifprobe && echo blocked > /root/service-during-build",
      "echo $SYSTEMD_OFFLINE > /root/systemd-offline-during-build",
    ]
  }
  post-processor "imagefactory-scrub" {}
}
`, nil)
	if res.ExitCode != 0 {
		t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	out := filepath.Join(h.Dir, "out")
	report, err := os.ReadFile(filepath.Join(out, "t.scrub.json"))
	if err != nil {
		t.Fatalf("no scrub report: %v", err)
	}
	img := filepath.Join(out, "t.raw")
	fixture.FsckPartition(t, img, disk.Root())
	fixture.WithReadWriteMount(t, img, disk.Root(), func(dir string) {
		for p, want := range map[string]string{
			"/root/service-during-build":         "blocked\n",
			"/root/systemd-offline-during-build": "1\n",
			"/usr/sbin/service":                  fixture.RHELService,
		} {
			if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(got) != want {
				t.Errorf("%s in the output = %q, %v; want %q", p, got, err, want)
			}
		}
		for _, p := range []string{"/started-ifprobe", "/usr/sbin/service.imagefactory-orig"} {
			if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
				t.Errorf("%s is in the output image", p)
			}
		}
		fixture.AssertRPMFamilyScrubbed(t, dir, report)
	})
	before.AssertNoLeaksUnder(t, h.OwnDirs()...)
}
