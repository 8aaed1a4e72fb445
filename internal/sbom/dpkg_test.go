package sbom

import (
	"cmp"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// dpkgQuery is the oracle: dpkg-query -W on the tree's database, one
// "name version arch" line per package.
func dpkgQuery(t *testing.T, root string) []string {
	t.Helper()
	return dpkgQueryFormat(t, root, "${Package} ${Version} ${Architecture}\n")
}

// dpkgMeta is what else Read takes from dpkg's database, as dpkg-query
// prints it: the source package, the maintainer and the state.
const dpkgMetaFormat = "${Package}|${Architecture}|${source:Package}|${Maintainer}|${db:Status-Status}\n"

func dpkgMeta(inv *Inventory) []string {
	var out []string
	for _, p := range inv.Packages {
		if p.Manager == Dpkg {
			out = append(out, p.Name+"|"+p.Arch+"|"+p.Source+"|"+p.Supplier+"|"+cmp.Or(p.State, "installed"))
		}
	}
	slices.Sort(out)
	return out
}

func dpkgQueryFormat(t *testing.T, root, format string) []string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f", format).Output()
	if err != nil {
		t.Fatalf("dpkg-query: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	slices.Sort(lines)
	return lines
}

func lines(inv *Inventory, manager string) []string {
	var out []string
	for _, p := range inv.Packages {
		if p.Manager == manager {
			out = append(out, p.Name+" "+p.Version+" "+p.Arch)
		}
	}
	slices.Sort(out)
	return out
}

// TestDpkgMatchesDpkgQuery reads the cached Debian 12 tree and compares
// with what dpkg-query lists in it.
func TestDpkgMatchesDpkgQuery(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("dpkg-query missing")
	}
	root := fixture.DebianTree(t)
	inv, err := Read(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Incomplete) != 0 {
		t.Errorf("Incomplete = %q", inv.Incomplete)
	}
	want := dpkgQuery(t, root)
	got := lines(inv, Dpkg)
	if !slices.Equal(got, want) {
		t.Errorf("packages differ from dpkg-query -W:\n got %d: %q\nwant %d: %q", len(got), got, len(want), want)
	}
	if m, want := dpkgMeta(inv), dpkgQueryFormat(t, root, dpkgMetaFormat); !slices.Equal(m, want) {
		t.Errorf("source, maintainer or state differ from dpkg-query:\n got %q\nwant %q", m, want)
	}
	// The document lists the same: name, version and arch (from the purl).
	b, err := inv.SPDX("debian", nil)
	if err != nil {
		t.Fatal(err)
	}
	var fromDoc []string
	for _, p := range readSPDX(t, b).Packages {
		for _, r := range p.PackageExternalReferences {
			if strings.HasPrefix(r.Locator, "pkg:deb/debian/") {
				_, arch, _ := strings.Cut(r.Locator, "?arch=")
				arch, _, _ = strings.Cut(arch, "&")
				fromDoc = append(fromDoc, p.PackageName+" "+p.PackageVersion+" "+arch)
			}
		}
	}
	slices.Sort(fromDoc)
	if !slices.Equal(fromDoc, want) {
		t.Errorf("the SPDX document lists %d packages, dpkg-query %d", len(fromDoc), len(want))
	}
	if len(got) < 50 {
		t.Errorf("only %d packages in a Debian tree", len(got))
	}
	if inv.OS.ID != "debian" || inv.OS.VersionID != "12" {
		t.Errorf("OS = %+v", inv.OS)
	}
	// Source: a package built from another source names it.
	for _, p := range inv.Packages {
		if p.Name == "libc6" && p.Source != "glibc" {
			t.Errorf("libc6 Source = %q, want glibc", p.Source)
		}
		if p.Name == "bash" && p.Source != "bash" {
			t.Errorf("bash Source = %q, want bash (no Source: field)", p.Source)
		}
	}
}

// writeTree writes files (image path -> content) under a fresh root.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const statusOK = `Package: a
Status: install ok installed
Architecture: amd64
Version: 1:2.0-1
Source: asrc (1:2.0-0.1)
Maintainer: Debian Perl Group <pkg-perl-maintainers@lists.alioth.debian.org>

Package: b
Status: deinstall ok config-files
Architecture: all
Version: 3
Description: multi-line
 continued
 .

Package: c
Status: purge ok not-installed
Architecture: amd64

Package: e
Status: install reinstreq half-installed
Architecture: amd64
Version: 5

Package: f
Status: hold ok half-configured
Architecture: amd64
Version: 6

Package: d
Status: install ok unpacked
Architecture: arm64
Multi-Arch: same
Version: 4-1
Source: dsrc

Package: d
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 4-1
Source: dsrc
Maintainer: Jane Doe <jane@example.org>

`

// TestDpkgStatus runs written status files through Read and, where the
// file is well formed, through dpkg-query, which must agree.
func TestDpkgStatus(t *testing.T) {
	for _, tc := range []struct {
		name       string
		files      map[string]string
		want       []string // name version arch
		incomplete string   // substring of the one Incomplete line; "" for none
		oracle     bool     // dpkg-query reads it too
	}{
		{"states", map[string]string{dpkgStatus: statusOK}, []string{"a 1:2.0-1 amd64", "b 3 all", "d 4-1 amd64", "d 4-1 arm64", "e 5 amd64", "f 6 amd64"}, "", true},
		{"no newline at the end", map[string]string{dpkgStatus: strings.TrimRight(statusOK, "\n")}, []string{"a 1:2.0-1 amd64", "b 3 all", "d 4-1 arm64", "e 5 amd64", "f 6 amd64"}, "truncated", false},
		{"truncated in a field name", map[string]string{dpkgStatus: statusOK + "Package: e\nStatus: install ok installed\nVers\n"}, []string{"a 1:2.0-1 amd64", "b 3 all", "d 4-1 amd64", "d 4-1 arm64", "e 5 amd64", "f 6 amd64"}, "not a field", false},
		{"garbage", map[string]string{dpkgStatus: "\x00\x01\x02garbage\n\xff\xfe\n"}, nil, dpkgStatus, false},
		{"bad status", map[string]string{dpkgStatus: "Package: x\nStatus: install ok flying\nVersion: 1\nArchitecture: all\n\n" + statusOK}, []string{"a 1:2.0-1 amd64", "b 3 all", "d 4-1 amd64", "d 4-1 arm64", "e 5 amd64", "f 6 amd64"}, "bad Status", false},
		{"two problems, one line", map[string]string{dpkgStatus: "garbage\n\nPackage: x\nStatus: install ok flying\nVersion: 1\nArchitecture: all\n\n" + statusOK}, []string{"a 1:2.0-1 amd64", "b 3 all", "d 4-1 amd64", "d 4-1 arm64", "e 5 amd64", "f 6 amd64"}, "2 paragraph(s) skipped; line 1: not a field", false},
		{"journal", map[string]string{dpkgStatus: statusOK, dpkgUpdates + "/0000": "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:2.0-2\nSource: asrc\n\n", dpkgUpdates + "/tmp.i": "junk"}, []string{"a 1:2.0-2 amd64", "b 3 all", "d 4-1 amd64", "d 4-1 arm64", "e 5 amd64", "f 6 amd64"}, "", true},
		{"no dpkg", map[string]string{"etc/hostname": "x\n"}, nil, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := writeTree(t, tc.files)
			inv, err := Read(root)
			if err != nil {
				t.Fatal(err)
			}
			got := lines(inv, Dpkg)
			if !slices.Equal(got, tc.want) {
				t.Errorf("packages = %q, want %q", got, tc.want)
			}
			if tc.incomplete == "" && len(inv.Incomplete) != 0 {
				t.Errorf("Incomplete = %q, want none", inv.Incomplete)
			}
			if tc.incomplete != "" && (len(inv.Incomplete) != 1 || !strings.Contains(inv.Incomplete[0], tc.incomplete) || !strings.Contains(inv.Incomplete[0], "/var/lib/dpkg/")) {
				t.Errorf("Incomplete = %q, want one line naming the file and %q", inv.Incomplete, tc.incomplete)
			}
			if tc.oracle {
				if _, err := exec.LookPath("dpkg-query"); err == nil {
					if want := dpkgQuery(t, root); !slices.Equal(got, want) {
						t.Errorf("dpkg-query lists %q, Read %q", want, got)
					}
					if m, want := dpkgMeta(inv), dpkgQueryFormat(t, root, dpkgMetaFormat); !slices.Equal(m, want) {
						t.Errorf("dpkg-query says\n%q, Read\n%q", want, m)
					}
				}
			}
			for _, p := range inv.Packages {
				if p.Name == "a" && p.Source != "asrc" || p.Name == "d" && p.Source != "dsrc" || p.Name == "b" && p.Source != "b" {
					t.Errorf("%s: Source %q", p.Name, p.Source)
				}
			}
		})
	}
}
