package imagefactory_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	// The factory workflow's templates (example/github-actions) gate on
	// imagefactory-boottest: until the plugin has it, only their syntax.
	boottest := pluginHas(t, h, "boottest")
	// What factory.yml gives the application builds from secrets and vars.
	glance := []string{"OS_AUTH_URL=https://keystone.invalid:5000/v3", "OS_APPLICATION_CREDENTIAL_ID=id",
		"OS_APPLICATION_CREDENTIAL_SECRET=secret", "FACTORY_SERVE_HOST=runner.invalid"}
	for _, tc := range []struct {
		template string
		args     []string
		env      []string
		boottest bool // the template uses imagefactory-boottest
	}{
		{"example/build.pkr.hcl", nil, nil, false},
		{"example/base-image.pkr.hcl", []string{"-var", "base_image=" + base, "-var", "base_image_checksum=none"}, nil, false},
		{"example/from-tree.pkr.hcl", []string{"-only", "base.*"}, nil, false},
		{"example/qemu/build.pkr.hcl", []string{"-var", "base=" + base}, nil, false},
		{"example/github-actions/base.pkr.hcl", nil, nil, true},
		{"example/github-actions/apps", []string{"-only", "web.*", "-var", "base_image=" + base}, glance, true},
		{"example/github-actions/apps", []string{"-only", "redis.*", "-var", "base_image=" + base}, glance, true},
	} {
		t.Run(filepath.Base(filepath.Dir(tc.template))+"/"+filepath.Base(tc.template), func(t *testing.T) {
			args := append(append([]string{"validate"}, tc.args...), filepath.Join(root, tc.template))
			if tc.boottest && !boottest {
				args = []string{"validate", "-syntax-only", filepath.Join(root, tc.template)}
			}
			cmd := h.Command(args...)
			cmd.Env = slices.Concat(cmd.Env, tc.env)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "The configuration is valid") && !strings.Contains(string(out), "Syntax-only check passed") {
				t.Errorf("packer %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// pluginHas reports whether the installed plugin registers the
// post-processor name (its `describe` output).
func pluginHas(t *testing.T, h *fixture.Harness, name string) bool {
	t.Helper()
	bins, _ := filepath.Glob(filepath.Join(h.PluginPath, "github.com", "*", "*", "packer-plugin-*_linux_*"))
	if len(bins) == 0 {
		t.Fatalf("no plugin binary under %s", h.PluginPath)
	}
	out, err := exec.Command(bins[0], "describe").Output()
	if err != nil {
		t.Fatalf("%s describe: %v", bins[0], err)
	}
	var d struct {
		PostProcessors []string `json:"post_processors"`
	}
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("%s describe: %v\n%s", bins[0], err, out)
	}
	return slices.Contains(d.PostProcessors, name)
}
