package imagefactory_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// reproPipeline is issue 16's pipeline: a bootable GPT disk from the
// cached debootstrap tree (the one of TestAccBootstrapBoots and the
// example), a shell provisioner writing a fixed file (under a fixed script
// name: Packer's default, script_NNNN.sh, is random and its name would stay
// in /tmp's directory block), scrub, then sparsify to a zstd qcow2 that
// keeps the scrubbed raw disk beside it. The epoch comes from the
// environment (SOURCE_DATE_EPOCH), as reproducible-builds.org has it, or
// from var.epoch (then the post-processors read it from the artifacts they
// are given); the fstab names the root by UUID, to check it.
var reproPipeline = `
variable "epoch" {
  type    = string
  default = ""
}
` + treeTemplate(`
  bootstrap {
    tool    = "debootstrap"
    suite   = "bookworm"
    variant = "minbase"
    include = `+bootstrapInclude+`
  }
  format            = "raw"
  fstab_by          = "uuid"
  source_date_epoch = var.epoch
`, `
  provisioner "shell" {
    remote_file = "repro.sh"
    inline      = ["echo reproducible > /etc/imagefactory-repro"]
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {
      format              = "qcow2"
      compression         = "zstd"
      keep_input_artifact = true
    }
  }
`)

// TestAccReproduciblePipeline: two builds with the same epoch (one from
// SOURCE_DATE_EPOCH, one from the template's source_date_epoch, which
// reaches the post-processors through the artifacts) give the same sha256
// for the raw disk and for the qcow2; a third with another epoch differs in
// both. The output boots, and every UUID that
// fstab and grub.cfg name is its root filesystem's (checkReproUUIDs).
func TestAccReproduciblePipeline(t *testing.T) {
	requireQemu(t)
	t.Parallel() // minutes of chroot and mkfs work: beside the boot tests, after the sequential ones
	a := newAcc(t)
	env := a.Env
	// build runs the pipeline with the epoch in the environment, or in the
	// template when inTemplate.
	build := func(name, epoch string, inTemplate bool) (raw, qcow2 string) {
		t.Helper()
		out := filepath.Join(a.Dir, name)
		vars := map[string]string{"out": out}
		a.Env = append(append([]string(nil), env...), "SOURCE_DATE_EPOCH="+epoch)
		if inTemplate {
			a.Env, vars["epoch"] = env, epoch
		}
		res := mustBuild(t, a, reproPipeline, vars)
		t.Logf("build %s (epoch %s, in the template: %v): %s", name, epoch, inTemplate, res.Duration)
		if !strings.Contains(res.Output, "(imagefactory-sparsify): Reproducible: SOURCE_DATE_EPOCH "+epoch+" (") {
			t.Errorf("sparsify did not take the build's epoch:\n%s", res.Output)
		}
		return filepath.Join(out, "t.raw"), filepath.Join(out, "t.qcow2")
	}
	raw1, qcow1 := build("first", "1767225600", false)
	time.Sleep(1100 * time.Millisecond) // every time the builds could write differs
	raw2, qcow2 := build("second", "1767225600", true)
	raw3, qcow3 := build("other-epoch", "1767225601", false)
	a.Env = env

	for _, p := range [][2]string{{raw1, raw2}, {qcow1, qcow2}} {
		if s1, s2 := fixture.Sha256(t, p[0]), fixture.Sha256(t, p[1]); s1 != s2 {
			t.Errorf("same epoch, different bytes: %s %s, %s %s", s1, p[0], s2, p[1])
		} else {
			t.Logf("sha256 %s: %s (both builds)", filepath.Base(p[0]), s1)
		}
	}
	for _, d := range fixture.DiffDisks(t, raw1, raw2) {
		t.Errorf("the raw disks differ at bytes %#x-%#x: %s", d.Start, d.End, d.Where)
	}
	for _, p := range [][2]string{{raw1, raw3}, {qcow1, qcow3}} {
		if fixture.Sha256(t, p[0]) == fixture.Sha256(t, p[1]) {
			t.Errorf("another epoch gave the same bytes: %s and %s", p[0], p[1])
		}
	}
	checkReproUUIDs(t, raw1)
	a.assertNoLeaksHere(t)
	fixture.BootToLogin(t, qcow1, fixture.BootOptions{})
}
