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
// of a build names as outputs only files that exist, each once.
//   - consumed: scrub (in place: it keeps its input) then sparsify to
//     qcow2, which consumes the raw disk; the raw disk, kept in the list
//     by scrub's keep, says it was consumed (it once read "raw disk image:
//     …/t.raw (1.38G)" after sparsify had removed it);
//   - in place: a qcow2 build, scrub, then sparsify qcow2 to qcow2 (the
//     output renamed over the input): the builder's and scrub's lines say
//     the file was rewritten and leave its path to sparsify's (the path
//     was listed twice).
func TestAccFinalArtifactList(t *testing.T) {
	disk := fixture.NewDisk(t, fixture.DiskOptions{})
	for _, tt := range []struct {
		name, source string
		outputs      []string // the files the list must name as outputs
		consumed     []string // the files it must say were consumed
		rewritten    int      // lines saying their file was rewritten in place
	}{
		{"consumed", ``, []string{"t.qcow2"}, []string{"t.raw"}, 0},
		{"in place", `format = "qcow2"`, []string{"t.qcow2"}, nil, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAcc(t)
			res := mustBuild(t, a, template(tt.source, `
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
			named := map[string]int{} // output -> lines naming it as one
			consumed := map[string]bool{}
			rewritten := 0
			for _, l := range list {
				if strings.Contains(l, "rewritten in place by a later post-processor") {
					rewritten++
				}
				for _, m := range path.FindAllStringSubmatch(l, -1) {
					p := m[1]
					if !filepath.IsAbs(p) {
						p = filepath.Join(a.Dir, p)
					}
					_, err := os.Stat(p)
					isConsumed := strings.Contains(l, m[1]+", consumed by a later post-processor")
					switch {
					case err != nil && !isConsumed:
						t.Errorf("the list names %s, which is gone, as an output: %q", p, l)
					case err == nil && isConsumed:
						t.Errorf("the list says %s was consumed, but it is there: %q", p, l)
					case isConsumed:
						consumed[filepath.Base(p)] = true
					default:
						named[filepath.Base(p)]++
					}
				}
			}
			for _, f := range tt.outputs {
				if named[f] != 1 {
					t.Errorf("the list names %s as an output %d times, want once", f, named[f])
				}
			}
			for _, f := range tt.consumed {
				if !consumed[f] {
					t.Errorf("the list does not say %s was consumed", f)
				}
			}
			if rewritten != tt.rewritten {
				t.Errorf("%d lines say their file was rewritten in place, want %d", rewritten, tt.rewritten)
			}
			a.assertNoLeaks(t)
		})
	}
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
