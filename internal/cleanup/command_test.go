package cleanup

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseReapArgs(t *testing.T) {
	t.Setenv("IMAGEFACTORY_STATE_DIR", "/tmp/state-from-env")
	for _, c := range []struct {
		args []string
		want reapArgs
		err  string // substring of the error; "" for none
	}{
		{args: []string{"--journal", "/run/imagefactory/1-a.journal"}, want: reapArgs{journal: "/run/imagefactory/1-a.journal"}},
		{args: []string{"-journal=/x/1-a.journal"}, want: reapArgs{journal: "/x/1-a.journal"}},
		{args: []string{"--all"}, want: reapArgs{all: true, stateDir: "/tmp/state-from-env"}},
		{args: []string{"--all", "--state-dir", "/srv/state"}, want: reapArgs{all: true, stateDir: "/srv/state"}},
		{args: []string{"--help"}, want: reapArgs{help: true}},
		{args: []string{"-h"}, want: reapArgs{help: true}},
		{args: nil, err: "say what to release: --journal PATH"},
		{args: []string{"--all", "--journal", "/x.journal"}, err: "exclude each other"},
		{args: []string{"/x/1-a.journal"}, err: `unexpected argument "/x/1-a.journal"`},
		{args: []string{"--all", "extra"}, err: `unexpected argument "extra"`},
		{args: []string{"--journal"}, err: "flag needs an argument: -journal"},
		{args: []string{"--journal", "/x.journal", "--state-dir", "/s"}, err: "--state-dir goes with --all"},
		{args: []string{"--all", "--state-dir="}, err: "--state-dir is empty"},
		{args: []string{"--everything"}, err: "flag provided but not defined: -everything"},
	} {
		got, err := parseReapArgs(c.args)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("parseReapArgs(%q): %v", c.args, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("parseReapArgs(%q) error = %v, want %q", c.args, err, c.err)
		case c.err == "" && got != c.want:
			t.Errorf("parseReapArgs(%q) = %+v, want %+v", c.args, got, c.want)
		}
	}
}

// Command's exit statuses and messages, on journals that need no root.
func TestCommand(t *testing.T) {
	dir := t.TempDir()
	notJournal := filepath.Join(dir, "notes.txt")
	os.WriteFile(notJournal, nil, 0o600)
	missing := filepath.Join(dir, "1-gone.journal")
	for _, c := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{args: nil, code: 2, stderr: "Usage:"},
		{args: []string{"--help"}, code: 0, stdout: "reap --journal PATH"},
		{args: []string{"--all", "--state-dir", filepath.Join(dir, "none")}, code: 0, stdout: "nothing to release in " + filepath.Join(dir, "none")},
		{args: []string{"--journal", missing}, code: 1, stderr: missing},
		{args: []string{"--journal", notJournal}, code: 1, stderr: "is not a journal"},
		{args: []string{"--journal", "a", "b"}, code: 2, stderr: `unexpected argument "b"`},
	} {
		var out, errOut bytes.Buffer
		code := Command(c.args, &out, &errOut)
		if code != c.code || !strings.Contains(out.String(), c.stdout) || !strings.Contains(errOut.String(), c.stderr) {
			t.Errorf("Command(%q) = %d, stdout %q, stderr %q; want %d, %q, %q", c.args, code, out.String(), errOut.String(), c.code, c.stdout, c.stderr)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/root/.config/packer/plugins/github.com/imagefactory/imagefactory/packer-plugin-imagefactory_v0.1.0_x5.0_linux_amd64": "/root/.config/packer/plugins/github.com/imagefactory/imagefactory/packer-plugin-imagefactory_v0.1.0_x5.0_linux_amd64",
		"/run/my state/1-a.journal": "'/run/my state/1-a.journal'",
		"/tmp/it's":                 `'/tmp/it'\''s'`,
		"/a/$HOME":                  "'/a/$HOME'",
		"":                          "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := ReapCommandLine("/run/x y/1-a.journal"); !strings.HasSuffix(got, " reap --journal '/run/x y/1-a.journal'") || !filepath.IsAbs(strings.Fields(got)[0]) {
		t.Errorf("ReapCommandLine = %s", got)
	}
}
