package imagefactory_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	// What factory.yml gives the application builds from secrets and vars.
	glance := []string{"OS_AUTH_URL=https://keystone.invalid:5000/v3", "OS_APPLICATION_CREDENTIAL_ID=factory-credential-id",
		"OS_APPLICATION_CREDENTIAL_SECRET=factory-credential-secret", "FACTORY_SERVE_HOST=runner.invalid"}
	for _, tc := range []struct {
		template string
		args     []string
		env      []string
	}{
		{"example/build.pkr.hcl", nil, nil},
		{"example/base-image.pkr.hcl", []string{"-var", "base_image=" + base, "-var", "base_image_checksum=none"}, nil},
		{"example/from-tree.pkr.hcl", []string{"-only", "base.*"}, nil},
		{"example/qemu/build.pkr.hcl", []string{"-var", "base=" + base}, nil},
		{"example/github-actions/base.pkr.hcl", nil, nil},
		{"example/github-actions/apps", []string{"-only", "web.*", "-var", "base_image=" + base}, glance},
		{"example/github-actions/apps", []string{"-only", "redis.*", "-var", "base_image=" + base}, glance},
	} {
		t.Run(filepath.Base(filepath.Dir(tc.template))+"/"+filepath.Base(tc.template), func(t *testing.T) {
			args := append(append([]string{"validate"}, tc.args...), filepath.Join(root, tc.template))
			cmd := h.Command(args...)
			cmd.Env = slices.Concat(cmd.Env, tc.env)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "The configuration is valid") {
				t.Errorf("packer %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestAccExample runs the README's main command's script, example/run.sh
// (`make example`), with the plugin and Packer of this test binary: the
// factory from nothing (debootstrap, cached and shared with the other
// bootstrap tests), chroot provisioning with nginx, scrub, sparsify, and
// imagefactory-boottest gating the example's image with its HTTP and
// inline checks; then the script's offline checks, among them that the
// artifact's sha256 after the boot test is the one sparsify wrote before.
func TestAccExample(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"qemu-system-x86_64", "debootstrap", "sgdisk", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	t.Parallel() // boots under TCG (one core): two such tests run at once, after the sequential ones
	h := fixture.Packer(t)
	plugins, _ := filepath.Glob(filepath.Join(h.PluginPath, "github.com/imagefactory/imagefactory/packer-plugin-imagefactory_*"))
	plugins = slices.DeleteFunc(plugins, func(p string) bool { return strings.HasSuffix(p, "_SHA256SUM") })
	if len(plugins) != 1 {
		t.Fatalf("the harness's installed plugin: %v", plugins)
	}
	cmd := exec.Command(filepath.Join(fixture.RepoRoot(t), "example/run.sh"))
	cmd.Env = append(os.Environ(), "PACKER="+h.PackerBin, "PLUGIN="+plugins[0])
	// The terminal redirected to a file, as CI logs are: what the script
	// prints there must all stay (a tee of /dev/fd/3 once truncated it to
	// the last line).
	outFile := filepath.Join(t.TempDir(), "terminal")
	f, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	f.Close()
	out, rerr := os.ReadFile(outFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil || !strings.Contains(string(out), "==> example: OK") {
		t.Fatalf("example/run.sh: %v\n%s", err, out)
	}
	for _, want := range []string{"==> example: the full log is ", "packer build", "==> example: summary", "  artifact      "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the terminal's output, redirected to a file, lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "Boot test passed") || strings.HasPrefix(l, "  total") || strings.HasPrefix(l, "  packer build") {
			t.Log(strings.TrimSpace(l))
		}
	}
	// The terminal gets the stages, the summary and the failed checks; the
	// tools' own output goes to the full log (it was 2,400 lines on the
	// terminal, mostly apt and debootstrap).
	terminal := strings.Count(string(out), "\n")
	full := filepath.Join(fixture.RepoRoot(t), "example/cache/example.log")
	log, err := os.ReadFile(full)
	if err != nil {
		t.Fatalf("the full log: %v", err)
	}
	t.Logf("%d lines on the terminal, %d in %s", terminal, strings.Count(string(log), "\n"), full)
	if terminal >= 100 {
		t.Errorf("example/run.sh printed %d lines on the terminal, want under 100:\n%s", terminal, out)
	}
	for _, want := range []string{"Builds finished", "file format: qcow2", "  ok    the GPT is valid"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the full log %s lacks %q (the tools' output)", full, want)
		}
	}
	// The build's artifact list: each line once, and only files that
	// exist, unless it says they were consumed.
	buildLog, err := os.ReadFile(filepath.Join(fixture.RepoRoot(t), "example/cache/last-build.log"))
	if err != nil {
		t.Fatal(err)
	}
	list := finalArtifacts(regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(string(buildLog), ""))
	t.Logf("the artifact list:\n%s", strings.Join(list, "\n"))
	seen := map[string]bool{}
	for _, l := range list {
		if seen[l] {
			t.Errorf("the artifact list repeats %q", l)
		}
		seen[l] = true
		if m := regexp.MustCompile(`disk image: ([^\s,]+?)(?:,| \(|$)`).FindStringSubmatch(l); m != nil {
			if _, err := os.Stat(m[1]); err != nil && !strings.Contains(l, "consumed by a later post-processor") {
				t.Errorf("the artifact list names %s, which is gone: %q", m[1], l)
			}
		}
	}
	if !strings.Contains(string(out), "the full log is "+full) {
		t.Errorf("the terminal does not say where the full log is:\n%s", out)
	}

	// Issue 17's list, on what a person reads: the terminal and Packer's
	// output (the tools' own output, qemu-img info's byte counts among it,
	// stays in the full log).
	build := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(string(buildLog), "")
	for name, text := range map[string]string{"terminal": string(out), "build output": build} {
		for _, p := range outputProblems(text) {
			t.Errorf("the example's %s: %s", name, p)
		}
	}
	for _, want := range []string{
		"Trimmed the free space in ", "  partition 3 (ext4): trimmed ", // sparsify, once (outputProblems)
		"The kernel started ", "Boot test passed", // the boot test's progress
		"Provisioning done in ", "Wrote the SBOM ", "Working disk made in ",
	} {
		if !strings.Contains(build, want) {
			t.Errorf("the example's build output lacks %q", want)
		}
	}
	qcow2 := filepath.Join(fixture.RepoRoot(t), "example/output-debian-web/debian-12-web.qcow2")
	if doc := readSBOM(t, qcow2+".spdx.json"); doc.DocumentName != "debian-12-web.qcow2" || !strings.Contains(doc.DocumentNamespace, "/debian-12-web.qcow2-") {
		t.Errorf("the SBOM beside the example's qcow2: name %q, namespace %q", doc.DocumentName, doc.DocumentNamespace)
	}

	// A user's own template on the example's image, as the new user wrote
	// one: the qcow2 used in place as base_image (no entry in Packer's
	// cache), a provisioner, scrub, then sparsify qcow2 to qcow2 in place.
	t.Run("user template on the example's image", func(t *testing.T) {
		res := h.Build(t, fixture.RequiredPlugins+`
variable "base" { type = string }
source "imagefactory" "mine" {
  base_image          = var.base
  base_image_checksum = "file:${var.base}.sha256"
  format              = "qcow2"
  output_directory    = "out"
  image_name          = "mine"
}
build {
  sources = ["source.imagefactory.mine"]
  provisioner "shell" { inline = ["echo mine > /etc/mine"] }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" { format = "qcow2" }
  }
}
`, map[string]string{"base": qcow2})
		if res.ExitCode != 0 {
			t.Fatalf("packer build: exit %d\n%s", res.ExitCode, res.Output)
		}
		for _, p := range outputProblems(res.Output) {
			t.Errorf("the user's build: %s", p)
		}
		for _, want := range []string{"Base image " + qcow2 + " (a local file, used in place)", "Working disk: base_image " + qcow2 + " converted from qcow2 in ",
			"Provisioning done in ", "Converted to qcow2: ", "Trimmed the free space in "} {
			if !strings.Contains(res.Output, want) {
				t.Errorf("the user's build does not say %q:\n%s", want, res.Output)
			}
		}
		if cached, _ := filepath.Glob(filepath.Join(h.Base, "cache", "*")); len(cached) > 0 {
			t.Errorf("Packer's cache holds %v for a local base image", cached)
		}
		out := filepath.Join(h.Dir, "out", "mine.qcow2")
		named := 0
		for _, l := range finalArtifacts(res.Output) {
			named += strings.Count(l, "out/mine.qcow2 ")
		}
		if named != 1 {
			t.Errorf("the artifact list names out/mine.qcow2 %d times, want once:\n%s", named, strings.Join(finalArtifacts(res.Output), "\n"))
		}
		if doc := readSBOM(t, out+".spdx.json"); doc.DocumentName != "mine.qcow2" {
			t.Errorf("the SBOM beside mine.qcow2 is named %q", doc.DocumentName)
		}
	})
}
