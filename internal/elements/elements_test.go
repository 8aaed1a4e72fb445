package elements

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

const corpus = "testdata/elements"

func corpusAbs(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(corpus)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSortNumericMatchesSort compares SortNumeric with the real
// `LANG=C sort -n` dib-run-parts uses.
func TestSortNumericMatchesSort(t *testing.T) {
	names := []string{"10-b", "2-a", "010-c", "100-z", "foo", "1_x", "09", "9-nine", "-1-neg", "-", "0", "00-zero",
		"a", "B", "_x", "10", "10a", "10-a", "99-last", "1", "01"}
	got := append([]string(nil), names...)
	SortNumeric(got)
	cmd := exec.Command("sort", "-n")
	cmd.Env = append(os.Environ(), "LANG=C", "LC_ALL=C")
	cmd.Stdin = strings.NewReader(strings.Join(names, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Fields(string(out))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SortNumeric:\n got %v\nwant %v", got, want)
	}
}

func TestSelectScripts(t *testing.T) {
	tests := []struct {
		dir      string
		run      []string
		skipped  []string
		reasonOf map[string]string
	}{
		{"order/install.d", []string{"foo", "1_x", "2-a", "09", "9-nine", "010-c", "10-b", "100-z"}, nil, nil},
		{"naming/install.d", []string{"50-good", "80-link"}, []string{"60-dotted.sh", "70-noexec"},
			map[string]string{"60-dotted.sh": "name does not match", "70-noexec": "not executable"}},
		{"missing.d", nil, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			run, skipped, err := SelectScripts(filepath.Join(corpus, tc.dir))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(run, tc.run) {
				t.Errorf("run %v, want %v", run, tc.run)
			}
			var names []string
			for _, s := range skipped {
				names = append(names, s.Name)
				if !strings.Contains(s.Reason, tc.reasonOf[s.Name]) {
					t.Errorf("%s skipped for %q, want %q", s.Name, s.Reason, tc.reasonOf[s.Name])
				}
			}
			if !reflect.DeepEqual(names, tc.skipped) {
				t.Errorf("skipped %v, want %v", names, tc.skipped)
			}
		})
	}
}

func TestEnvFiles(t *testing.T) {
	got, err := EnvFiles(filepath.Join(corpus, "envd/environment.d"))
	if err != nil {
		t.Fatal(err)
	}
	// .hidden matches [0-9A-Za-z_.-]+ and dib-run-parts sources it too.
	if want := []string{".hidden", "10-first", "20-second"}; !reflect.DeepEqual(got, want) {
		t.Errorf("EnvFiles = %v, want %v", got, want)
	}
}

func TestExpand(t *testing.T) {
	root := corpusAbs(t)
	tests := []struct {
		name    string
		user    []string
		exclude []string
		want    []string
		err     string
	}{
		{"deps", []string{"deep-b"}, nil, []string{"deep-b", "deep-a"}, ""},
		{"provides satisfies a dep", []string{"wants-virtual"}, nil, []string{"wants-virtual", "prov-x"}, ""},
		{"two providers", []string{"two-providers"}, nil, nil, `provides "virtual", already provided by prov-x`},
		{"requested but provided", []string{"virtual-user", "prov-x"}, nil, nil, "not found"},
		{"operating-system from the base image", []string{"os-provider"}, nil, nil, `provides "operating-system", already provided by the base image`},
		{"cycle names members", []string{"cycle-a"}, nil, nil, "element-deps cycle: cycle-a -> cycle-b -> cycle-c -> cycle-a"},
		{"missing names the path", []string{"nope"}, nil, nil, `element "nope" not found in elements_path ` + root},
		{"builtin deps are provided", []string{"order", "package-installs"}, nil, []string{"order"}, ""},
		{"exclude", []string{"deep-b"}, []string{"deep-a"}, []string{"deep-b"}, ""},
		{"duplicates expand fine", []string{"dup-both"}, nil, []string{"dup-both", "dup-a", "dup-b"}, ""},
	}
	all, _, err := FindAll([]string{root})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			els, err := Expand(tc.user, all, ExpandOptions{Provided: Provided(), Exclude: tc.exclude, Paths: []string{root}})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range els {
				names = append(names, e.Name)
			}
			if !reflect.DeepEqual(names, tc.want) {
				t.Errorf("got %v, want %v", names, tc.want)
			}
		})
	}
}

// TestExpandRequestedProvided: a requested element that another provides
// is an error, as in DIB.
func TestExpandRequestedProvided(t *testing.T) {
	dir := t.TempDir()
	for _, e := range []string{"virtual", "prov"} {
		os.MkdirAll(filepath.Join(dir, e), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "prov", "element-provides"), []byte("virtual\n"), 0o644)
	all, _, _ := FindAll([]string{dir})
	_, err := Expand([]string{"virtual", "prov"}, all, ExpandOptions{Provided: Provided()})
	if err == nil || !strings.Contains(err.Error(), "virtual (provided by prov)") {
		t.Fatalf("err = %v", err)
	}
}

// TestFindAllOverride: an earlier path entry wins, as ELEMENTS_PATH.
func TestFindAllOverride(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		os.MkdirAll(filepath.Join(d, "same"), 0o755)
	}
	all, over, err := FindAll([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if all["same"].Path != a+"/same" || len(over) != 1 || over[0].Loser != b+"/same" {
		t.Errorf("same -> %s, overrides %v", all["same"].Path, over)
	}
	if _, _, err := FindAll([]string{a, filepath.Join(a, "nope")}); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("missing path entry: %v", err)
	}
}

func TestBuildTree(t *testing.T) {
	all, _, err := FindAll([]string{corpusAbs(t)})
	if err != nil {
		t.Fatal(err)
	}
	els := func(names ...string) []*Element {
		var out []*Element
		for _, n := range names {
			out = append(out, all[n])
		}
		return out
	}
	t.Run("duplicate hook", func(t *testing.T) {
		_, err := BuildTree(t.TempDir(), els("dup-a", "dup-b"))
		if err == nil || err.Error() != "duplicate hook install.d/50-same: in element dup-a and in element dup-b" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("deeper entries overwrite", func(t *testing.T) {
		dir := t.TempDir()
		tree, err := BuildTree(dir, els("deep-a", "deep-b", "naming"))
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "static/etc/imagefactory-deep")); string(b) != "from deep-b\n" {
			t.Errorf("static/etc/imagefactory-deep = %q", b)
		}
		if _, err := os.Stat(filepath.Join(dir, "static/etc/imagefactory-deep-a")); err != nil {
			t.Error(err)
		}
		if l, err := os.Readlink(filepath.Join(dir, "install.d/80-link")); err != nil || l != "../lib/target" {
			t.Errorf("link kept as a link: %q %v", l, err)
		}
		if tree.Owner["install.d/50-good"] != "naming" || tree.Owner["static/etc"] != "deep-a" {
			t.Errorf("owners: %v", tree.Owner)
		}
		if _, err := os.Stat(filepath.Join(dir, "element-deps")); err != nil {
			t.Error("top-level files are copied to the tree root:", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "install.d/90-dir/.keep")); err != nil {
			t.Error(err)
		}
	})
}

func TestSquashPackageInstalls(t *testing.T) {
	all, _, err := FindAll([]string{corpusAbs(t)})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ARCH": "amd64", "DIB_PYTHON_VERSION": "3", "IF_FLAG": "on", "IF_OTHER": "y"}
	plan, err := SquashPackageInstalls([]*Element{all["pkgs"], all["pkgsjson"]}, env)
	if err != nil {
		t.Fatal(err)
	}
	names := func(phase, in string) []string {
		var out []string
		for _, r := range plan[phase][in] {
			out = append(out, r.Package)
		}
		return out
	}
	tests := []struct {
		phase, in string
		want      []string
	}{
		{"install.d", "install", []string{"build-tool", "for-amd64", "mapped", "plain", "py3", "source-only", "when-and", "when-yes", "json-pkg"}},
		{"install.d", "uninstall", []string{"build-tool", "removed"}},
		{"pre-install.d", "install", []string{"phase-pre"}},
		{"pre-install.d", "uninstall", []string{"multi"}},
		{"post-install.d", "install", []string{"multi", "json-phase"}},
	}
	for _, tc := range tests {
		if got := names(tc.phase, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %s = %v, want %v", tc.phase, tc.in, got, tc.want)
		}
	}
	maps := map[string]*PkgMap{}
	maps["pkgs"], _ = LoadPkgMap(all["pkgs"])
	if got := plan.Packages("install.d", "install", maps, "debian", "bookworm"); !reflect.DeepEqual(got[:3], []string{"build-tool", "for-amd64", "mapped-release"}) {
		t.Errorf("mapped packages = %v", got)
	}

	bad := []struct {
		name, yaml, err string
		env             map[string]string
	}{
		{"unset when variable", "p:\n  when: IF_UNSET=1\n", "the variable IF_UNSET is not set", env},
		{"malformed when", "p:\n  when: '=x'\n", "malformed when", env},
		{"arch and not-arch", "p:\n  arch: amd64\n  not-arch: arm64\n", "arch and not-arch both given", env},
		{"other arch", "p:\n  not-arch: arm64\n", "", map[string]string{"ARCH": "arm64"}},
		{"installtype per element", "p:\n  installtype: package\n", "", map[string]string{"DIB_INSTALLTYPE_x_y": "package"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "x-y")
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "package-installs.yaml"), []byte(tc.yaml), 0o644)
			plan, err := SquashPackageInstalls([]*Element{{Name: "x-y", Path: dir}}, tc.env)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch tc.name {
			case "other arch":
				if len(plan["install.d"]["install"]) != 0 {
					t.Errorf("not-arch arm64 on arm64 installed: %v", plan)
				}
			case "installtype per element":
				if len(plan["install.d"]["install"]) != 1 {
					t.Errorf("DIB_INSTALLTYPE_x_y=package: %v", plan)
				}
			}
		})
	}
}

func TestPkgMapResolve(t *testing.T) {
	all, _, _ := FindAll([]string{corpusAbs(t)})
	m, err := LoadPkgMap(all["pkgmap"])
	if err != nil {
		t.Fatal(err)
	}
	in := []string{"tool", "other", "dropped", "rel", "unknown"}
	tests := []struct {
		distro, release string
		want            []string
	}{
		{"debian", "bookworm", []string{"tool-debian", "other-family", "rel-bookworm", "unknown"}},
		{"ubuntu", "jammy", []string{"tool-debian-family", "other-family", "dropped", "rel-default", "unknown"}},
		{"fedora", "40", []string{"tool-default", "other-default", "dropped", "rel-default", "unknown"}},
	}
	for _, tc := range tests {
		if got := m.Map(tc.distro, tc.release, in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s/%s: %v, want %v", tc.distro, tc.release, got, tc.want)
		}
	}
}

// TestPkgMapHelper runs the in-image pkg-map helper (bash, awk) on the
// table Go writes, against the Go resolution.
func TestPkgMapHelper(t *testing.T) {
	all, _, _ := FindAll([]string{corpusAbs(t)})
	m, _ := LoadPkgMap(all["pkgmap"])
	dir := t.TempDir()
	if err := writeHelpers(filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "pkg-map"), 0o755)
	os.WriteFile(filepath.Join(dir, "pkg-map", "pkgmap"), []byte(m.Table()), 0o644)
	// Debian's /bin/sh (dash) by the #! line, and busybox's ash (Alpine).
	shell := []string{}
	run := func(env []string, args ...string) (string, int) {
		argv := append(append(append([]string{}, shell...), filepath.Join(dir, "bin", "pkg-map")), args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return strings.Join(strings.Fields(string(out)), " "), code
	}
	deb := []string{"DISTRO_NAME=debian", "DIB_RELEASE=bookworm"}
	tests := []struct {
		env  []string
		args []string
		out  string
		code int
	}{
		{deb, []string{"--element", "pkgmap", "tool", "dropped", "rel"}, "tool-debian rel-bookworm", 0},
		{deb, []string{"--element", "pkgmap", "--distro", "ubuntu", "tool"}, "tool-debian-family", 0},
		{deb, []string{"--element", "pkgmap", "unknown"}, "", 1},
		{deb, []string{"--element", "pkgmap", "--missing-ok", "--prefix", "-", "unknown", "other"}, "-unknown -other-family", 0},
		{deb, []string{"--element", "nomap", "a"}, "", 2},
		{deb, []string{"--element", "nomap", "--missing-ok", "a"}, "a", 0},
		{nil, []string{"--element", "pkgmap", "a"}, "", 1},
	}
	for _, shell = range [][]string{nil, {fixture.BusyboxPath, "sh"}} {
		for _, tc := range tests {
			out, code := run(tc.env, tc.args...)
			if out != tc.out || code != tc.code {
				t.Errorf("%v pkg-map %v: %q exit %d, want %q exit %d", shell, tc.args, out, code, tc.out, tc.code)
			}
		}
	}
	// Every helper is valid bash.
	for _, h := range helperNames() {
		if out, err := exec.Command("bash", "-n", filepath.Join(dir, "bin", h)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v %s", h, err, out)
		}
	}
}

func TestParseSourceRepos(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "source-repository-x"), []byte("# comment\n\nr1 file /opt/a $SRC/a\nr2 tar /opt/b /b.tgz\nr3 git /opt/c /c.git\nskipped git /opt/d /d\n"), 0o644)
	env := map[string]string{"SRC": "/src", "DIB_REPOREF_r3": "v1", "DIB_INSTALLTYPE_skipped": "package"}
	got, err := ParseSourceRepos(dir, env)
	if err != nil {
		t.Fatal(err)
	}
	want := []SourceRepo{
		{"r1", "file", "/opt/a", "/src/a", "", "x"},
		{"r2", "tar", "/opt/b", "/b.tgz", "*", "x"},
		{"r3", "git", "/opt/c", "/c.git", "v1", "x"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	os.WriteFile(filepath.Join(dir, "source-repository-y"), []byte("bad line\n"), 0o644)
	if _, err := ParseSourceRepos(dir, env); err == nil || !strings.Contains(err.Error(), `cannot parse "bad line"`) {
		t.Errorf("bad line: %v", err)
	}
}

func TestResolveOptions(t *testing.T) {
	root := corpusAbs(t)
	for _, tc := range []struct {
		c   Config
		err string
	}{
		{Config{Paths: []string{root}}, "at least one element"},
		{Config{Elements: []string{"order"}}, "elements_path"},
		{Config{Elements: []string{"order"}, Paths: []string{root}, Phases: []string{"bogus"}}, `unknown phase "bogus.d"`},
		{Config{Elements: []string{"order"}, Paths: []string{root}, ExcludeScripts: []string{"["}}, "exclude_scripts"},
		{Config{Elements: []string{"order"}, Paths: []string{root}, Phases: []string{"install", "root.d"}}, ""},
	} {
		p, err := Resolve(tc.c)
		if tc.err == "" {
			if err != nil || len(p.Phases) != 2 || p.Phases[0].Name != "root.d" {
				t.Errorf("Resolve: %v %+v", err, p)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Resolve(%+v) = %v, want %q", tc.c, err, tc.err)
		}
	}
}

func TestDistroRelease(t *testing.T) {
	for _, tc := range []struct{ osr, distro, release string }{
		{"ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n", "debian", "bookworm"},
		{"ID=ubuntu\nVERSION_CODENAME=jammy\n", "ubuntu", "jammy"},
		{"ID=fedora\nVERSION_ID=40\n", "fedora", "40"},
		{"ID=\"rhel\"\nVERSION_ID=\"9.3\"\n", "rhel", "9"},
		{"ID=\"opensuse-leap\"\nVERSION_ID=\"15.5\"\n", "opensuse", "15.5"},
		{"NAME=\"CentOS Stream\"\nID=\"centos\"\nVERSION_ID=\"9\"\n", "centos", "9-stream"},
	} {
		d, r := distroRelease(parseOSRelease(tc.osr))
		if d != tc.distro || r != tc.release {
			t.Errorf("%q: %s %s, want %s %s", tc.osr, d, r, tc.distro, tc.release)
		}
	}
}
