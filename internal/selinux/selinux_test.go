package selinux

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

func TestParseConfig(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     Config
	}{
		{"fedora", "# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n", Config{Enforcing, "targeted"}},
		{"debian", "SELINUX=permissive\nSELINUXTYPE=default\n\nSETLOCALDEFS=0\n", Config{Permissive, "default"}},
		{"case and blanks", "  SELINUX=Disabled  \n", Config{Disabled, defaultType}},
		{"last wins", "SELINUX=disabled\nSELINUX=enforcing\n", Config{Enforcing, defaultType}},
		{"no mode", "SELINUXTYPE=mls\n", Config{"", "mls"}},
		{"junk mode", "SELINUX=yes\n", Config{"", defaultType}},
		{"commented", "#SELINUX=enforcing\n", Config{"", defaultType}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseConfig([]byte(tt.in)); got != tt.want {
				t.Errorf("ParseConfig(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestBatchesEscapeGlob(t *testing.T) {
	got := batches([]string{"/a*b", "/c{d,e}", `/f\g`, "/h\ni"}, "/R")
	want := [][]string{{`/R/a\*b`, `/R/c\{d,e\}`, `/R/f\\g`, "/R/h\ni"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("batches = %q, want %q", got, want)
	}
	long := make([]string, 3000)
	for i := range long {
		long[i] = "/" + strings.Repeat("x", 60)
	}
	n := 0
	for _, b := range batches(long, "") {
		if len(strings.Join(b, " ")) > maxBatch {
			t.Errorf("batch of %d bytes, limit %d", len(strings.Join(b, " ")), maxBatch)
		}
		n += len(b)
	}
	if n != len(long) {
		t.Errorf("batches kept %d of %d paths", n, len(long))
	}
}

// wouldRelabel runs the host's `setfiles -n -v` over the whole tree and
// returns its lines for the paths whose label is not the one the image's
// file contexts give, but for the admin's own label (SELinuxAdminPath).
func wouldRelabel(t *testing.T, tree string) []string {
	t.Helper()
	fc := filepath.Join(tree, FileContexts("default"))
	out, err := exec.Command("setfiles", "-n", "-v", "-r", tree, fc, tree).CombinedOutput()
	if err != nil {
		t.Fatalf("setfiles -n -v: %v\n%s", err, out)
	}
	var paths []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " "+tree+fixture.SELinuxAdminPath+" ") {
			continue
		}
		if strings.Contains(line, "Would relabel") || strings.Contains(line, "Relabeled") {
			paths = append(paths, line)
		}
	}
	return paths
}

func label(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, "security.selinux", buf)
	if errors.Is(err, unix.ENODATA) {
		return ""
	}
	if err != nil {
		t.Fatalf("label of %s: %v", p, err)
	}
	return strings.TrimRight(string(buf[:n]), "\x00")
}

// sample are untouched files of the tree whose labels must survive.
var sample = []string{"/etc/passwd", "/usr/bin/ls", "/usr/sbin/setfiles", "/var/log", "/etc/ssh/sshd_config", "/usr/lib", fixture.SELinuxAdminPath}

// provision does to tree what the acceptance test's provisioners do, and
// more: a directory moved in from elsewhere, a chmod, a symlink out of the
// image.
func provision(t *testing.T, tree string) {
	t.Helper()
	w := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(tree, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, p), []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w("/usr/local/bin/tool", "#!/bin/sh\n")
	w("/etc/app.conf", "x=1\n")
	w("/var/www/html/index.html", "<p>hi</p>\n")
	w("/root/site/sub/page.html", "moved\n")
	if err := os.Rename(filepath.Join(tree, "root/site"), filepath.Join(tree, "srv/site")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(tree, "etc/issue"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(tree, "srv/escape")); err != nil {
		t.Fatal(err)
	}
}

func TestChangedAndRelabel(t *testing.T) {
	base := fixture.SELinuxTree(t)
	tree := fixture.CopyTree(t, base)
	before := map[string]string{}
	for _, p := range sample {
		before[p] = label(t, filepath.Join(tree, p))
	}
	if before[fixture.SELinuxAdminPath] != fixture.SELinuxAdminLabel {
		t.Fatalf("fixture: %s is %q", fixture.SELinuxAdminPath, before[fixture.SELinuxAdminPath])
	}
	root, err := inroot.Open(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	snap, err := Snap(root, []string{"/proc", "/sys", "/dev", "/run"})
	if err != nil {
		t.Fatal(err)
	}
	provision(t, tree)
	ch, err := snap.Changed(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/etc/app.conf", "/etc/issue", "/srv/escape", "/srv/site", "/usr/local/bin/tool", "/var/www"}
	if !reflect.DeepEqual(ch.Paths, want) {
		t.Fatalf("changed = %q, want %q", ch.Paths, want)
	}
	if ch.Trees != 2 {
		t.Errorf("trees = %d, want 2 (/srv/site moved in, /var/www new)", ch.Trees)
	}
	for _, p := range []string{"usr/local/bin/tool", "etc/app.conf", "var/www/html/index.html", "srv/site"} {
		if got := label(t, filepath.Join(tree, p)); got != "" {
			t.Fatalf("%s is labelled %q before the relabel: the check cannot fail", p, got)
		}
	}

	t.Run("off leaves them unlabelled", func(t *testing.T) {
		out, err := Relabel(context.Background(), Request{Root: root, Mode: ModeOff, Changed: ch.Paths})
		if err != nil {
			t.Fatal(err)
		}
		if got := label(t, filepath.Join(tree, "etc/app.conf")); got != "" {
			t.Errorf("off: /etc/app.conf labelled %q", got)
		}
		t.Log(out.Summary)
	})

	// The host's setfiles: the image's is taken away, and the chroot must
	// not be asked.
	if err := os.Rename(filepath.Join(tree, "usr/sbin/setfiles"), filepath.Join(tree, "usr/sbin/setfiles.away")); err != nil {
		t.Fatal(err)
	}
	chroot := func(context.Context, []string) (string, error) {
		t.Error("the chroot was asked to run setfiles the image does not have")
		return "", errors.New("no")
	}
	out, err := Relabel(context.Background(), Request{Root: root, Changed: ch.Paths, Chroot: chroot})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(tree, "usr/sbin/setfiles.away"), filepath.Join(tree, "usr/sbin/setfiles")); err != nil {
		t.Fatal(err)
	}
	wantSummary := "SELinux: relabelled 6 changed paths with the host's setfiles -r (policy default)"
	if out.Summary != wantSummary {
		t.Errorf("summary %q, want %q", out.Summary, wantSummary)
	}
	if got := wouldRelabel(t, tree); len(got) != 0 {
		t.Errorf("after the relabel, setfiles -n -v still finds:\n%s", strings.Join(got, "\n"))
	}
	for _, p := range sample {
		if got := label(t, filepath.Join(tree, p)); got != before[p] {
			t.Errorf("untouched %s: label %q, was %q", p, got, before[p])
		}
	}
	if got := label(t, filepath.Join(tree, "var/www/html/index.html")); !strings.Contains(got, ":httpd_sys_content_t:") {
		t.Errorf("/var/www/html/index.html: %q", got)
	}
	// The symlink out of the image was labelled as a link; the host's / was not touched.
	if got := label(t, filepath.Join(tree, "srv/escape")); got == "" {
		t.Error("/srv/escape (a symlink) left unlabelled")
	}

	t.Run("firstboot", func(t *testing.T) {
		if _, err := Relabel(context.Background(), Request{Root: root, Mode: ModeFirstboot}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(tree, AutorelabelPath)); err != nil {
			t.Error(err)
		}
		os.Remove(filepath.Join(tree, AutorelabelPath))
	})

	t.Run("full resets the admin's label", func(t *testing.T) {
		out, err := Relabel(context.Background(), Request{Root: root, Mode: ModeFull, Skip: []string{"/proc", "/sys", "/dev", "/run"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(out.Summary)
		if got := label(t, filepath.Join(tree, fixture.SELinuxAdminPath)); got == fixture.SELinuxAdminLabel {
			t.Errorf("full relabel kept %s's %q", fixture.SELinuxAdminPath, got)
		}
	})
}

// TestNoPolicy: an image whose config names a policy it does not have.
func TestNoPolicy(t *testing.T) {
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "etc/selinux"), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := inroot.Open(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, tt := range []struct {
		config, mode string
		warn         bool
	}{
		{"SELINUX=enforcing\nSELINUXTYPE=targeted\n", ModeAuto, false},
		{"SELINUX=permissive\nSELINUXTYPE=targeted\n", ModeFull, false},
		{"SELINUX=permissive\nSELINUXTYPE=targeted\n", ModeAuto, true},
	} {
		if err := os.WriteFile(filepath.Join(tree, "etc/selinux/config"), []byte(tt.config), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := Relabel(context.Background(), Request{Root: root, Mode: tt.mode, Changed: []string{"/etc"}})
		msg := out.Warning
		if !tt.warn {
			var np *NoPolicyError
			if !errors.As(err, &np) {
				t.Fatalf("%q %s: err %v, want a NoPolicyError", tt.config, tt.mode, err)
			}
			msg = err.Error()
		} else if err != nil {
			t.Fatalf("%q %s: %v, want a warning", tt.config, tt.mode, err)
		}
		for _, w := range []string{"SELINUXTYPE=targeted", "/etc/selinux/targeted/contexts/files/file_contexts", `selinux_relabel = "firstboot"`, `"off"`} {
			if !strings.Contains(msg, w) {
				t.Errorf("%q %s: message %q lacks %q", tt.config, tt.mode, msg, w)
			}
		}
	}
	// No config at all: auto does nothing.
	os.Remove(filepath.Join(tree, "etc/selinux/config"))
	out, err := Relabel(context.Background(), Request{Root: root, Changed: []string{"/etc"}})
	if err != nil || !strings.Contains(out.Summary, "nothing to relabel") {
		t.Errorf("no config: %+v, %v", out, err)
	}
	if err := CheckMode("sometimes"); err == nil || !strings.Contains(err.Error(), `"sometimes"`) {
		t.Errorf("CheckMode(sometimes) = %v", err)
	}
}
