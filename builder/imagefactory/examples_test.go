package imagefactory_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestExamplesValidate runs `packer validate` on every template in
// example/ with the plugin installed, so an option renamed or removed in
// the builder or a post-processor breaks the test, not a user's first run.
// (`make example` builds and boots example/build.pkr.hcl itself.)
func TestExamplesValidate(t *testing.T) {
	h := fixture.Packer(t)
	root := fixture.RepoRoot(t)
	// The templates that start from an image need one that exists.
	base := filepath.Join(t.TempDir(), "base.qcow2")
	if err := os.WriteFile(base, []byte("QFI\xfb"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		template string
		args     []string
	}{
		{"example/build.pkr.hcl", nil},
		{"example/base-image.pkr.hcl", []string{"-var", "base_image=" + base, "-var", "base_image_checksum=none"}},
		{"example/from-tree.pkr.hcl", []string{"-only", "base.*"}},
		{"example/qemu/build.pkr.hcl", []string{"-var", "base=" + base}},
	} {
		t.Run(filepath.Base(filepath.Dir(tc.template))+"/"+filepath.Base(tc.template), func(t *testing.T) {
			args := append(append([]string{"validate"}, tc.args...), filepath.Join(root, tc.template))
			out, err := h.Command(args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "The configuration is valid") {
				t.Errorf("packer %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}
