package main

// The CI files are checked by the tools that read them: actionlint for every
// workflow (the project's and the one users copy), goreleaser for the
// release configuration. Both are built by `make lint-tools` from
// tools/actionlint and tools/goreleaser.

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// lintTool returns the path of a linter built into bin/ (or the one env
// names), failing the test when it is missing: a skipped lint would pass
// silently.
func lintTool(t *testing.T, env, name string) string {
	t.Helper()
	bin := os.Getenv(env)
	if bin == "" {
		abs, err := filepath.Abs(filepath.Join("bin", name))
		if err != nil {
			t.Fatal(err)
		}
		bin = abs
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no %s at %s (run `make lint-tools`, or set %s): %v", name, bin, env, err)
	}
	return bin
}

// workflows lists every workflow file actionlint must pass.
func workflows(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, glob := range []string{".github/workflows/*.yml", "example/github-actions/*.yml"} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	// test, release, factory: fewer means a glob went wrong, not a clean run.
	if len(files) < 3 {
		t.Fatalf("found only %d workflow files: %v", len(files), files)
	}
	return files
}

// runLint runs bin with args and returns its combined output and exit code
// (-1 when it could not run).
func runLint(t *testing.T, dir, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		t.Fatalf("%s: %v\n%s", bin, err, out)
		return "", -1
	}
}

func TestWorkflowsPassActionlint(t *testing.T) {
	bin := lintTool(t, "ACTIONLINT_BIN", "actionlint")
	files := workflows(t)
	out, code := runLint(t, ".", bin, append([]string{"-no-color"}, files...)...)
	if code != 0 {
		t.Fatalf("actionlint exit %d on %v:\n%s", code, files, out)
	}
}

// TestActionlintFailsOnBrokenWorkflow shows the check above can fail: each
// case breaks one thing of the factory workflow's shape, and actionlint must
// exit 1 (problems found) naming the rule.
func TestActionlintFailsOnBrokenWorkflow(t *testing.T) {
	bin := lintTool(t, "ACTIONLINT_BIN", "actionlint")
	const head = "name: broken\non:\n  workflow_dispatch:\n"
	cases := []struct {
		name, workflow, rule, detail string
		shellcheck                   bool // the rule needs shellcheck on PATH
	}{
		{
			name: "needs names no job",
			workflow: head + `jobs:
  base:
    runs-on: ubuntu-24.04
    steps:
      - run: echo base
  apps:
    needs: bsae
    runs-on: ubuntu-24.04
    steps:
      - run: echo apps
`,
			rule: "[job-needs]", detail: `"bsae"`,
		},
		{
			name: "matrix key misspelt",
			workflow: head + `jobs:
  apps:
    runs-on: ubuntu-24.04
    strategy:
      matrix:
        template: [web, redis]
    steps:
      - run: echo "$T"
        env:
          T: ${{ matrix.templat }}
`,
			rule: "[expression]", detail: `"templat"`,
		},
		{
			name: "schedule that never parses",
			workflow: `name: broken
on:
  schedule:
    - cron: '17 25 * * *'
jobs:
  base:
    runs-on: ubuntu-24.04
    steps:
      - run: echo base
`,
			rule: "[events]", detail: "cron",
		},
		{
			name: "untrusted input in a script",
			workflow: `name: broken
on:
  pull_request:
jobs:
  base:
    runs-on: ubuntu-24.04
    steps:
      - run: echo "${{ github.event.pull_request.title }}"
`,
			rule: "[expression]", detail: "potentially untrusted",
		},
		{
			name: "shellcheck finding in run",
			workflow: head + `jobs:
  base:
    runs-on: ubuntu-24.04
    steps:
      - run: cd $TEMPLATES && ls
`,
			rule: "[shellcheck]", detail: "SC2086", shellcheck: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.shellcheck {
				if _, err := exec.LookPath("shellcheck"); err != nil {
					t.Skip("shellcheck is not installed (scripts/install-deps.sh installs it)")
				}
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "broken.yml"), []byte(c.workflow), 0o644); err != nil {
				t.Fatal(err)
			}
			out, code := runLint(t, dir, bin, "-no-color", "broken.yml")
			if code != 1 {
				t.Fatalf("actionlint exit %d, want 1 (problems found):\n%s", code, out)
			}
			if !strings.Contains(out, c.rule) || !strings.Contains(out, c.detail) {
				t.Fatalf("actionlint output names no %s with %s:\n%s", c.rule, c.detail, out)
			}
		})
	}
}

func TestGoreleaserCheck(t *testing.T) {
	bin := lintTool(t, "GORELEASER_BIN", "goreleaser")
	good, err := os.ReadFile(".goreleaser.yml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		config string
		ok     bool
		detail string
	}{
		{name: "the release configuration", config: string(good), ok: true},
		// goreleaser reads its configuration strictly: a misspelt key is
		// an error, not a silently default archive.
		{
			name:   "misspelt key",
			config: strings.Replace(string(good), "name_template:", "name_templte:", 1),
			detail: "name_templte",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, ".goreleaser.yml")
			if err := os.WriteFile(cfg, []byte(c.config), 0o644); err != nil {
				t.Fatal(err)
			}
			out, code := runLint(t, dir, bin, "check", "--config", cfg)
			if c.ok && code != 0 {
				t.Fatalf("goreleaser check exit %d:\n%s", code, out)
			}
			if !c.ok && (code == 0 || !strings.Contains(out, c.detail)) {
				t.Fatalf("goreleaser check exit %d, want a failure naming %s:\n%s", code, c.detail, out)
			}
		})
	}
}
