package sbom

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/openpgp/armor" //nolint:staticcheck // only to armor a key for rpm --import

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// epochSpec is a second package for the rpm-family tree: an Epoch (which
// %{EVR} prints and %{VERSION} does not), an old-style license name that is
// no SPDX expression, and an arch of its own.
const epochSpec = `Name: sbom-epoch
Epoch: 3
Version: 2.5
Release: 7.el9
Summary: sbom test package
License: GPLv2+
Vendor: Rocky Enterprise Software Foundation
BuildArch: noarch
%description
A package with an epoch.
%files
`

// rpmTree is an RPMFamilyTree (Rocky 9.4, rpm 4.18's sqlite database
// made by Debian's rpm) with epochSpec installed too.
func rpmTree(t *testing.T) string {
	t.Helper()
	tree := t.TempDir()
	fixture.RPMFamilyTree(t, tree)
	top := t.TempDir()
	spec := filepath.Join(top, "sbom-epoch.spec")
	if err := os.WriteFile(spec, []byte(epochSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "rpmbuild", "--define", "_topdir "+top, "--define", "_buildhost build.invalid", "-bb", spec)
	runCmd(t, "rpm", "--root", tree, "--dbpath", fixture.RPMDBPath, "-i", "--nodeps", filepath.Join(top, "RPMS", "noarch", "sbom-epoch-2.5-7.el9.noarch.rpm"))
	// rpm --import records a key as a gpg-pubkey header without ARCH or
	// SOURCERPM, as every RHEL image holds its vendor's: the host's
	// Debian archive key, armored as rpm wants it.
	key, err := os.ReadFile(debianArchiveKey)
	if err != nil {
		t.Fatalf("%v (debian-archive-keyring)", err)
	}
	asc := filepath.Join(top, "key.asc")
	f, err := os.Create(asc)
	if err != nil {
		t.Fatal(err)
	}
	w, err := armor.Encode(f, "PGP PUBLIC KEY BLOCK", nil)
	if err == nil {
		_, err = w.Write(key)
	}
	if err == nil {
		err = w.Close()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "rpm", "--root", tree, "--dbpath", fixture.RPMDBPath, "--import", asc)
	return tree
}

// debianArchiveKey is one OpenPGP key, binary (debian-archive-keyring).
const debianArchiveKey = "/usr/share/keyrings/debian-archive-bookworm-stable.gpg"

func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// rpmQuery is the oracle: rpm -qa with a query format, sorted; rpm prints
// "(none)" for a tag the header lacks, which Package holds as "".
func rpmQuery(t *testing.T, root, dbpath, qf string) []string {
	t.Helper()
	out := runCmd(t, "rpm", "--root", root, "--dbpath", dbpath, "-qa", "--qf", qf)
	out = strings.ReplaceAll(out, "(none)", "")
	l := strings.Split(strings.TrimRight(out, "\n"), "\n")
	slices.Sort(l)
	return l
}

func TestRPMMatchesRPMQuery(t *testing.T) {
	tree := rpmTree(t)
	before := fixture.DirManifest(t, tree)
	inv, err := Read(tree)
	if err != nil {
		t.Fatal(err)
	}
	// The database is read from a copy: the image is left as it was.
	if d := fixture.ManifestDiff(before, fixture.DirManifest(t, tree), 10); len(d) != 0 {
		t.Errorf("Read changed the image: %q", d)
	}
	if len(inv.Incomplete) != 0 {
		t.Errorf("Incomplete = %q", inv.Incomplete)
	}
	want := rpmQuery(t, tree, fixture.RPMDBPath, `%{NAME} %{EVR} %{ARCH}\n`)
	got := lines(inv, RPM)
	if !slices.Equal(got, want) || len(got) != 3 {
		t.Errorf("packages differ from rpm -qa:\n got %q\nwant %q", got, want)
	}
	if !slices.Contains(got, "sbom-epoch 3:2.5-7.el9 noarch") {
		t.Errorf("no epoch in %q", got)
	}
	var meta []string
	for _, p := range inv.Packages {
		meta = append(meta, p.Name+"|"+p.License+"|"+p.Source+"|"+p.Supplier)
	}
	slices.Sort(meta)
	if wantMeta := rpmQuery(t, tree, fixture.RPMDBPath, `%{NAME}|%{LICENSE}|%{SOURCERPM}|%{VENDOR}\n`); !slices.Equal(meta, wantMeta) {
		t.Errorf("license and source differ from rpm:\n got %q\nwant %q", meta, wantMeta)
	}
	if inv.OS.ID != "rocky" || inv.OS.VersionID != "9.4" || inv.OS.PrettyName != "Rocky Linux 9.4 (Blue Onyx)" {
		t.Errorf("OS = %+v", inv.OS)
	}
	b, err := inv.SPDX("rocky", nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := readSPDX(t, b)
	for _, p := range doc.Packages {
		if p.PackageName == "sbom-epoch" {
			if p.PackageLicenseDeclared != "NOASSERTION" || p.PackageLicenseComments != "license as the rpm database holds it: GPLv2+" {
				t.Errorf("sbom-epoch license %q / %q", p.PackageLicenseDeclared, p.PackageLicenseComments)
			}
			if l := p.PackageExternalReferences[0].Locator; l != "pkg:rpm/rocky/sbom-epoch@2.5-7.el9?arch=noarch&distro=rocky-9.4&epoch=3&upstream=sbom-epoch-2.5-7.el9.src.rpm" {
				t.Errorf("purl %s", l)
			}
		}
		if p.PackageName == "imagefactory-fixture" && p.PackageLicenseDeclared != "MIT" {
			t.Errorf("imagefactory-fixture license %q", p.PackageLicenseDeclared)
		}
	}
}

// TestRPMSysimage: Fedora 36+ keeps the database in /usr/lib/sysimage/rpm
// and leaves /var/lib/rpm as a relative symlink to it.
func TestRPMSysimage(t *testing.T) {
	tree := rpmTree(t)
	want := lines(mustRead(t, tree), RPM)
	sys := filepath.Join(tree, "usr/lib/sysimage/rpm")
	if err := os.MkdirAll(filepath.Dir(sys), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(tree, "var/lib/rpm"), sys); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../usr/lib/sysimage/rpm", filepath.Join(tree, "var/lib/rpm")); err != nil {
		t.Fatal(err)
	}
	inv := mustRead(t, tree)
	if got := lines(inv, RPM); !slices.Equal(got, want) || len(inv.Incomplete) != 0 {
		t.Errorf("sysimage: %q (incomplete %q), want %q", got, inv.Incomplete, want)
	}
	if got := rpmQuery(t, tree, "/usr/lib/sysimage/rpm", `%{NAME} %{EVR} %{ARCH}\n`); !slices.Equal(got, want) {
		t.Errorf("rpm reads %q there", got)
	}
}

func mustRead(t *testing.T, root string) *Inventory {
	t.Helper()
	inv, err := Read(root)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// TestRPMIsolated: with IsolateRPM the database is listed by a child
// process (this test binary, whose TestMain dispatches it as the plugin's
// main does): the same packages, and a reader that crashes in a goroutine
// of its own, which no recover can catch in-process, is one Incomplete
// line naming the database, not the end of the build.
func TestRPMIsolated(t *testing.T) {
	tree := rpmTree(t)
	inProcess, err := Read(tree)
	if err != nil {
		t.Fatal(err)
	}
	IsolateRPM = true
	defer func() { IsolateRPM = false }()
	child, err := Read(tree)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lines(child, RPM), lines(inProcess, RPM)) || len(child.Incomplete) != 0 || len(lines(child, RPM)) != 3 {
		t.Errorf("child read %q (incomplete %q), in-process %q", lines(child, RPM), child.Incomplete, lines(inProcess, RPM))
	}
	t.Setenv(childPanicEnv, "1")
	crashed, err := Read(tree)
	if err != nil {
		t.Fatal(err)
	}
	want := fixture.RPMDBPath + "/rpmdb.sqlite: the rpm database reader failed: panic: " + childPanicMessage
	if len(crashed.Incomplete) != 1 || crashed.Incomplete[0] != want || len(lines(crashed, RPM)) != 0 {
		t.Errorf("a crashing reader: Incomplete %q, rpm packages %q; want %q", crashed.Incomplete, lines(crashed, RPM), want)
	}
}
