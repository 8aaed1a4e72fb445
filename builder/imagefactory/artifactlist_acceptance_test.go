package imagefactory_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestAccFinalArtifactList: the list of artifacts Packer prints at the end
// of a build with scrub (in place: it keeps its input) and sparsify to
// qcow2 (which consumes the raw disk) names as outputs only files that
// exist; the raw disk, kept in the list by scrub's keep, says it was
// consumed (it once read "raw disk image: …/t.raw (1.38G)" after sparsify
// had removed it).
func TestAccFinalArtifactList(t *testing.T) {
	a := newAcc(t)
	disk := fixture.NewDisk(t, fixture.DiskOptions{})
	res := mustBuild(t, a, template(``, `
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" { format = "qcow2" }
  }
`), map[string]string{"base": disk.Path})
	list := finalArtifacts(res.Output)
	if len(list) < 2 {
		t.Fatalf("no artifact list at the end of the output:\n%s", res.Output)
	}
	t.Logf("the artifact list:\n%s", strings.Join(list, "\n"))
	// "WHAT disk image: PATH (DETAIL)" or "…: PATH, consumed by …"; PATH
	// relative to the build's directory.
	path := regexp.MustCompile(`disk image: ([^\s,]+?)(?:,| \(|$)`)
	raw, qcow2 := filepath.Join(a.out(), "t.raw"), filepath.Join(a.out(), "t.qcow2")
	var sawRaw, sawQcow2 bool
	for _, l := range list {
		for _, m := range path.FindAllStringSubmatch(l, -1) {
			p := m[1]
			if !filepath.IsAbs(p) {
				p = filepath.Join(a.Dir, p)
			}
			_, err := os.Stat(p)
			consumed := strings.Contains(l, m[1]+", consumed by a later post-processor")
			if err != nil && !consumed {
				t.Errorf("the list names %s, which is gone, as an output: %q", p, l)
			}
			if err == nil && consumed {
				t.Errorf("the list says %s was consumed, but it is there: %q", p, l)
			}
			sawRaw = sawRaw || p == raw
			sawQcow2 = sawQcow2 || (p == qcow2 && err == nil)
		}
	}
	if !sawQcow2 || !sawRaw {
		t.Errorf("the list should name the qcow2 (there: %v) and the consumed raw disk (%v):\n%s", sawQcow2, sawRaw, strings.Join(list, "\n"))
	}
	a.assertNoLeaks(t)
}

// finalArtifacts is the "--> BUILD: ARTIFACT" lines Packer prints after
// "Builds finished. The artifacts of successful builds are:".
func finalArtifacts(out string) []string {
	i := strings.Index(out, "The artifacts of successful builds are:")
	if i < 0 {
		return nil
	}
	var list []string
	for _, l := range strings.Split(out[i:], "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "--> ") {
			list = append(list, strings.TrimSpace(l))
		}
	}
	return list
}
