package sbom

import (
	"bytes"
	"encoding/json"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx"
	"github.com/spdx/tools-golang/spdxlib"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

var sampleInventory = &Inventory{
	OS:      OS{ID: "debian", VersionID: "12", Name: "Debian GNU/Linux", PrettyName: "Debian GNU/Linux 12 (bookworm)"},
	Kernels: []string{"6.1.0-18-amd64"},
	Packages: []Package{
		{Name: "libc6", Version: "2.36-9+deb12u4", Arch: "amd64", Source: "glibc", Manager: Dpkg},
		{Name: "libstdc++6", Version: "12.2.0-14", Arch: "amd64", Source: "gcc-12", Manager: Dpkg},
		{Name: "libstdc--6", Version: "1", Arch: "amd64", Source: "x", Manager: Dpkg},
		{Name: "bash", Version: "5.1.8-6.el9", Arch: "x86_64", Source: "bash-5.1.8-6.el9.src.rpm", License: "GPLv3+", Manager: RPM},
		{Name: "shadow-utils", Version: "2:4.9-8.el9", Arch: "x86_64", Source: "shadow-utils-4.9-8.el9.src.rpm", License: "BSD-3-Clause AND GPL-2.0-or-later", Manager: RPM},
		{Name: "gpg-pubkey", Version: "350d275d-6279464b", Manager: RPM},
	},
}

// readSPDX reads a document back with the SPDX library's reader and
// validates it (element identifiers, relationships).
func readSPDX(t *testing.T, b []byte) *spdx.Document {
	t.Helper()
	doc, err := spdxjson.Read(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("SPDX reader: %v\n%s", err, b)
	}
	if err := spdxlib.ValidateDocument(doc); err != nil {
		t.Fatalf("SPDX validation: %v", err)
	}
	if doc.SPDXVersion != "SPDX-2.3" {
		t.Fatalf("spdxVersion %q", doc.SPDXVersion)
	}
	// What the library does not check: identifiers unique and of SPDX
	// 2.3's characters (section 7.2), created as section 6.9 writes it,
	// declared licenses valid expressions, a namespace that is an
	// absolute URI without "#" (section 6.5).
	seen := map[string]bool{}
	for _, p := range doc.Packages {
		id := string(p.PackageSPDXIdentifier)
		if seen[id] || !spdxID.MatchString(id) {
			t.Errorf("package %s: identifier %q duplicate or invalid", p.PackageName, id)
		}
		seen[id] = true
		if l := p.PackageLicenseDeclared; l != "NOASSERTION" {
			if _, ok := licenseExpression(l); !ok {
				t.Errorf("package %s: licenseDeclared %q", p.PackageName, l)
			}
		}
	}
	if _, err := time.Parse("2006-01-02T15:04:05Z", doc.CreationInfo.Created); err != nil {
		t.Errorf("created: %v", err)
	}
	if u, err := url.Parse(doc.DocumentNamespace); err != nil || !u.IsAbs() || strings.Contains(doc.DocumentNamespace, "#") {
		t.Errorf("documentNamespace %q", doc.DocumentNamespace)
	}
	if !bytes.HasSuffix(b, []byte("}\n")) {
		t.Error("no newline at the end")
	}
	return doc
}

var spdxID = regexp.MustCompile(`^[A-Za-z0-9.-]+$`)

func TestSPDX(t *testing.T) {
	src := repro.New(1700000000, "sbom-test")
	b, err := sampleInventory.SPDX("img", src)
	if err != nil {
		t.Fatal(err)
	}
	doc := readSPDX(t, b)
	if doc.DocumentName != "img" || doc.CreationInfo.Created != "2023-11-14T22:13:20Z" {
		t.Errorf("name %q created %q", doc.DocumentName, doc.CreationInfo.Created)
	}
	if !strings.HasPrefix(doc.DocumentNamespace, NamespacePrefix+"img-") {
		t.Errorf("namespace %q", doc.DocumentNamespace)
	}
	if doc.DocumentComment != "" {
		t.Errorf("comment %q on a complete inventory", doc.DocumentComment)
	}
	described, err := spdxlib.GetDescribedPackageIDs(doc)
	if err != nil || len(described) != 1 || described[0] != "OperatingSystem" {
		t.Fatalf("described %v, %v", described, err)
	}
	byName := map[string]*struct {
		version, purl, license, licComment, source, purpose string
	}{}
	for _, p := range doc.Packages {
		e := &struct{ version, purl, license, licComment, source, purpose string }{p.PackageVersion, "", p.PackageLicenseDeclared, p.PackageLicenseComments, p.PackageSourceInfo, p.PrimaryPackagePurpose}
		for _, r := range p.PackageExternalReferences {
			if r.RefType == "purl" && r.Category == "PACKAGE-MANAGER" {
				e.purl = r.Locator
			}
		}
		if p.PackageDownloadLocation != "NOASSERTION" || p.PackageSupplier == nil || p.PackageSupplier.Supplier != "NOASSERTION" {
			t.Errorf("%s: downloadLocation %q supplier %v", p.PackageName, p.PackageDownloadLocation, p.PackageSupplier)
		}
		byName[p.PackageName] = e
	}
	for _, c := range []struct{ name, version, purl, license, licComment, source, purpose string }{
		{"Debian GNU/Linux", "12", "", "NOASSERTION", "", "", "OPERATING-SYSTEM"},
		{"kernel", "6.1.0-18-amd64", "", "NOASSERTION", "", "", "OTHER"},
		{"libc6", "2.36-9+deb12u4", "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc", "NOASSERTION", "", "built from source package glibc", ""},
		{"libstdc++6", "12.2.0-14", "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12&upstream=gcc-12", "NOASSERTION", "", "built from source package gcc-12", ""},
		{"bash", "5.1.8-6.el9", "pkg:rpm/debian/bash@5.1.8-6.el9?arch=x86_64&distro=debian-12&upstream=bash-5.1.8-6.el9.src.rpm", "NOASSERTION", "license as the rpm database holds it: GPLv3+", "built from source package bash-5.1.8-6.el9.src.rpm", ""},
		{"shadow-utils", "2:4.9-8.el9", "pkg:rpm/debian/shadow-utils@4.9-8.el9?arch=x86_64&distro=debian-12&epoch=2&upstream=shadow-utils-4.9-8.el9.src.rpm", "BSD-3-Clause AND GPL-2.0-or-later", "", "built from source package shadow-utils-4.9-8.el9.src.rpm", ""},
		{"gpg-pubkey", "350d275d-6279464b", "pkg:rpm/debian/gpg-pubkey@350d275d-6279464b?distro=debian-12", "NOASSERTION", "", "", ""},
	} {
		e := byName[c.name]
		if e == nil {
			t.Errorf("%s: not in the document", c.name)
			continue
		}
		got := []string{e.version, e.purl, e.license, e.licComment, e.source, e.purpose}
		want := []string{c.version, c.purl, c.license, c.licComment, c.source, c.purpose}
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, want)
		}
	}
	if len(doc.Packages) != 2+len(sampleInventory.Packages) {
		t.Errorf("%d packages", len(doc.Packages))
	}
	// Every package but the OS is contained by the OS.
	contained := 0
	for _, r := range doc.Relationships {
		if r.Relationship == "CONTAINS" && r.RefA.ElementRefID == "OperatingSystem" {
			contained++
		}
	}
	if contained != 1+len(sampleInventory.Packages) {
		t.Errorf("%d CONTAINS relationships", contained)
	}
}

// TestSPDXDeterministic: the same inventory and Source give the same
// bytes; another Source changes created and documentNamespace only; a nil
// Source gives a fresh namespace each time.
func TestSPDXDeterministic(t *testing.T) {
	a := repro.New(1700000000, "build-a")
	one, err := sampleInventory.SPDX("img", a)
	if err != nil {
		t.Fatal(err)
	}
	two, _ := sampleInventory.SPDX("img", repro.New(1700000000, "build-a"))
	if !bytes.Equal(one, two) {
		t.Fatal("two documents of one inventory and Source differ")
	}
	other, _ := sampleInventory.SPDX("img", repro.New(1800000000, "build-a"))
	if bytes.Equal(one, other) {
		t.Fatal("another epoch gives the same bytes")
	}
	strip := func(b []byte) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "documentNamespace")
		delete(m["creationInfo"].(map[string]any), "created")
		return m
	}
	x, _ := json.Marshal(strip(one))
	y, _ := json.Marshal(strip(other))
	if !bytes.Equal(x, y) {
		t.Errorf("documents differ beyond created and documentNamespace:\n%s\n%s", x, y)
	}
	// Another image under the same Source gets another namespace.
	changed := *sampleInventory
	changed.Packages = changed.Packages[1:]
	three, _ := changed.SPDX("img", a)
	if readSPDX(t, three).DocumentNamespace == readSPDX(t, one).DocumentNamespace {
		t.Error("two different inventories share a namespace")
	}
	r1, _ := sampleInventory.SPDX("img", nil)
	r2, _ := sampleInventory.SPDX("img", nil)
	if readSPDX(t, r1).DocumentNamespace == readSPDX(t, r2).DocumentNamespace {
		t.Error("nil Source: the namespace is not random")
	}
}

// Rename, golden: the document renamed for a conversion's output is
// byte for byte the one SPDX writes under that name, for the same epoch
// (the copy beside sparsify's qcow2 kept the raw image's name and
// namespace); with another epoch, or none, the namespace differs, and the
// result stays valid SPDX 2.3.
func TestRename(t *testing.T) {
	src := repro.New(1767225600, "debian-web")
	raw, err := sampleInventory.SPDX("debian-12-web.raw", src)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := sampleInventory.SPDX("debian-12-web.qcow2", repro.New(1767225600, "debian-web"))
	for _, tt := range []struct {
		name, to string
		src      *repro.Source
		equal    bool // to want
	}{
		{"same epoch", "debian-12-web.qcow2", repro.New(1767225600, "debian-web"), true},
		{"another epoch", "debian-12-web.qcow2", repro.New(1767225601, "debian-web"), false},
		{"no epoch", "debian-12-web.qcow2", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Rename(raw, tt.to, tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got, want) != tt.equal {
				t.Errorf("equal to SPDX's under the new name: %v, want %v:\n%s", !tt.equal, tt.equal, got)
			}
			doc := readSPDX(t, got)
			if doc.DocumentName != tt.to || !strings.HasPrefix(doc.DocumentNamespace, NamespacePrefix+tt.to+"-") {
				t.Errorf("name %q, namespace %q; want %s", doc.DocumentName, doc.DocumentNamespace, tt.to)
			}
			if strings.Contains(string(got), "debian-12-web.raw") {
				t.Error("the renamed document still names debian-12-web.raw")
			}
		})
	}
	if _, err := Rename([]byte("{"), "x", src); err == nil {
		t.Error("Rename of a broken document: no error")
	}
}

func TestSPDXIncomplete(t *testing.T) {
	inv := *sampleInventory
	inv.Incomplete = []string{"/var/lib/rpm/rpmdb.sqlite: file is not a database"}
	b, err := inv.SPDX("img", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := readSPDX(t, b).DocumentComment; c != "incomplete: /var/lib/rpm/rpmdb.sqlite: file is not a database" {
		t.Errorf("comment %q", c)
	}
	if _, err := inv.SPDX("", nil); err == nil {
		t.Error("no error for an empty name")
	}
}

func TestDiff(t *testing.T) {
	p := func(m, n, a, v string) Package { return Package{Manager: m, Name: n, Arch: a, Version: v} }
	base := &Inventory{Packages: []Package{
		p(Dpkg, "curl", "amd64", "7.88.1-9"),
		p(Dpkg, "gone", "all", "1"),
		p(Dpkg, "same", "amd64", "2"),
		p(Dpkg, "lib", "amd64", "3"),
		p(RPM, "down", "x86_64", "2-1"),
	}}
	final := &Inventory{Packages: []Package{
		p(Dpkg, "curl", "amd64", "7.88.1-10"),
		p(Dpkg, "same", "amd64", "2"),
		p(Dpkg, "lib", "amd64", "3"),
		p(Dpkg, "lib", "i386", "3"), // another Arch is another package
		p(Dpkg, "new", "amd64", "1:1.0"),
		p(RPM, "down", "x86_64", "1-1"),
	}}
	got := Diff(base, final)
	want := Changes{
		Added:    []Change{{Dpkg, "lib", "i386", "", "3"}, {Dpkg, "new", "amd64", "", "1:1.0"}},
		Removed:  []Change{{Dpkg, "gone", "all", "1", ""}},
		Upgraded: []Change{{Dpkg, "curl", "amd64", "7.88.1-9", "7.88.1-10"}, {RPM, "down", "x86_64", "2-1", "1-1"}},
	}
	if !slices.Equal(got.Added, want.Added) || !slices.Equal(got.Removed, want.Removed) || !slices.Equal(got.Upgraded, want.Upgraded) {
		t.Errorf("Diff =\n%+v\nwant\n%+v", got, want)
	}
	if s := got.Upgraded[0].String(); s != "~ dpkg curl 7.88.1-9 -> 7.88.1-10 amd64" {
		t.Errorf("String %q", s)
	}
	if c := Diff(final, final); !c.Empty() {
		t.Errorf("Diff of an inventory with itself: %+v", c)
	}
	if c := Diff(nil, final); len(c.Added) != len(final.Packages) {
		t.Errorf("Diff from nil: %+v", c)
	}
}

func TestSupplier(t *testing.T) {
	for _, tc := range []struct {
		manager, in, want string
	}{
		{Dpkg, "Jane Doe <jane@example.org>", "Person: Jane Doe (jane@example.org)"},
		{Dpkg, "Debian Perl Group <pkg-perl-maintainers@lists.alioth.debian.org>", "Organization: Debian Perl Group (pkg-perl-maintainers@lists.alioth.debian.org)"},
		{Dpkg, "GNU Libc Maintainers <debian-glibc@lists.debian.org>", "Organization: GNU Libc Maintainers (debian-glibc@lists.debian.org)"},
		{Dpkg, "util-linux packagers <util-linux@packages.debian.org>", "Organization: util-linux packagers (util-linux@packages.debian.org)"},
		{RPM, "Rocky Enterprise Software Foundation", "Organization: Rocky Enterprise Software Foundation"},
		{Apk, "Natanael  Copa\t<ncopa@alpinelinux.org>", "Person: Natanael Copa (ncopa@alpinelinux.org)"},
		{Pacman, "Unknown Packager", "Person: Unknown Packager"},
		{Dpkg, "", "NOASSERTION"},
	} {
		s := supplier(Package{Manager: tc.manager, Supplier: tc.in})
		b, err := s.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Trim(string(b), `"`); got != tc.want {
			t.Errorf("%s %q: %s, want %s", tc.manager, tc.in, got, tc.want)
		}
	}
}
