package sparsify_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestAccShrunkImageBoots: a bootable Debian 12 GPT disk made from a root
// tree, shrunk by imagefactory-sparsify (root filesystem, last partition,
// GPT backup moved, file truncated) and converted to a zstd qcow2, still
// boots with OVMF, whose firmware reads the moved GPT, to a login prompt.
func TestAccShrunkImageBoots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	tarball := fixture.DebianRootfs(t, true)
	h := fixture.Packer(t)
	before := fixture.LeakSnapshot()
	h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
	res := h.Build(t, `
source "imagefactory" "t" {
  source_rootfs    = "`+tarball+`"
  partition_table  = "gpt"
  disk_size        = "3G"
  output_directory = "out"
  mount_path       = "${path.cwd}/mnt"
}
build {
  sources = ["source.imagefactory.t"]
  post-processor "imagefactory-sparsify" {
    format      = "qcow2"
    compression = "zstd"
    shrink      = true
    free_space  = "32M"
  }
}
`, nil)
	if res.ExitCode != 0 {
		t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	if !strings.Contains(res.Output, "Shrank the root filesystem") {
		t.Fatalf("nothing shrunk:\n%s", res.Output)
	}
	img := filepath.Join(h.Dir, "out", "t.qcow2")
	before.AssertNoLeaksIn(t, h.Base)
	console := fixture.BootToLogin(t, img, fixture.BootOptions{UEFI: true})
	if !strings.Contains(console, "login:") {
		t.Errorf("no login prompt:\n%s", console)
	}
}
