package sbom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/github/go-spdx/v2/spdxexp"
	"github.com/package-url/packageurl-go"
	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx/v2/common"
	"github.com/spdx/tools-golang/spdx/v2/v2_3"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// Tool is the creator the documents name ("Tool: " in creationInfo).
var Tool = "packer-plugin-imagefactory"

// NamespacePrefix starts every documentNamespace; the document's name and
// a UUID follow (SPDX 2.3 section 6.5: a unique absolute URI, not
// necessarily resolvable).
const NamespacePrefix = "https://github.com/imagefactory/packer-plugin-imagefactory/spdx/"

// Element identifiers of the document (SPDX 2.3 section 3.2: "SPDXRef-"
// then letters, digits, "." and "-").
const (
	osID          = "OperatingSystem"
	noAssertion   = "NOASSERTION"
	purposeOS     = "OPERATING-SYSTEM"
	purposeOther  = "OTHER"
	namespaceSeed = "spdx/document-namespace/"
)

// SPDX returns the inventory as an SPDX 2.3 JSON document named name
// (SPDX 2.3 sections 6-7 and 11):
//
//   - the document DESCRIBES one package, the operating system
//     (primaryPackagePurpose OPERATING-SYSTEM, named and versioned from
//     os-release), which CONTAINS every installed package and a package
//     per kernel version;
//   - each installed package has its name, versionInfo, a purl
//     externalRef (pkg:deb, pkg:rpm, pkg:apk, pkg:alpm, with arch and
//     distro qualifiers), sourceInfo naming its source package,
//     licenseDeclared when the database's text is a valid SPDX license
//     expression (else NOASSERTION, with the text in licenseComments), its
//     supplier from the maintainer, vendor or packager the database names
//     (else NOASSERTION), and NOASSERTION for downloadLocation,
//     licenseConcluded and copyrightText, which no database states;
//   - when Incomplete is not empty, the document's comment starts
//     "incomplete: " and lists its lines.
//
// With a non-nil src the two fields that would hold the clock or
// randomness are derived from it: created is src.Time(), and
// documentNamespace's UUID comes from src and a hash of the rest of the
// document, so the same image read twice gives the same bytes and two
// different images never share a namespace. A nil src takes the clock and
// a random UUID.
func (inv *Inventory) SPDX(name string, src *repro.Source) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("sbom: SPDX document needs a name")
	}
	doc := inv.spdxDocument(name)
	doc.CreationInfo.Created = src.Time().Format(time.RFC3339)
	return withNamespace(doc, src)
}

// Rename returns the SPDX document doc (as SPDX wrote it) under the name
// name, for a copy beside another image file of the same packages (a
// conversion's output): documentName is name and documentNamespace is
// derived again as SPDX derives it, from src and the rest of the document
// (random with a nil src: a new document needs a new namespace, SPDX 2.3
// section 6.5); created and the rest are kept. With the epoch it was
// written with, the result equals SPDX's for the same inventory and name.
func Rename(doc []byte, name string, src *repro.Source) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("sbom: SPDX document needs a name")
	}
	d, err := spdxjson.Read(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("sbom: reading the SPDX document: %w", err)
	}
	d.DocumentName, d.DocumentNamespace = name, ""
	return withNamespace(d, src)
}

// withNamespace encodes doc, named and without a namespace, with its
// documentNamespace: NamespacePrefix, the name, and a UUID from src and a
// hash of the document without it (the one field left).
func withNamespace(doc *v2_3.Document, src *repro.Source) ([]byte, error) {
	body, err := encode(doc)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	doc.DocumentNamespace = NamespacePrefix + url.PathEscape(doc.DocumentName) + "-" + src.UUID(namespaceSeed+hex.EncodeToString(sum[:])).String()
	return encode(doc)
}

func encode(doc *v2_3.Document) ([]byte, error) {
	var b bytes.Buffer
	if err := spdxjson.Write(doc, &b, spdxjson.Indent("  "), spdxjson.EscapeHTML(false)); err != nil {
		return nil, fmt.Errorf("sbom: SPDX JSON: %w", err)
	}
	return b.Bytes(), nil
}

func (inv *Inventory) spdxDocument(name string) *v2_3.Document {
	doc := &v2_3.Document{
		SPDXVersion:    v2_3.Version,
		DataLicense:    v2_3.DataLicense,
		SPDXIdentifier: "DOCUMENT",
		DocumentName:   name,
		CreationInfo: &v2_3.CreationInfo{
			Creators:       []common.Creator{{CreatorType: "Tool", Creator: Tool}},
			CreatorComment: "Read offline from the image's package databases; no package manager ran.",
		},
	}
	if len(inv.Incomplete) > 0 {
		doc.DocumentComment = "incomplete: " + strings.Join(inv.Incomplete, "; ")
	}
	osName := inv.OS.Name
	if osName == "" {
		osName = inv.OS.ID
	}
	if osName == "" {
		osName = "unknown"
	}
	osPkg := &v2_3.Package{
		PackageName:             osName,
		PackageSPDXIdentifier:   osID,
		PackageVersion:          inv.OS.VersionID,
		PackageSupplier:         &common.Supplier{Supplier: noAssertion},
		PackageDownloadLocation: noAssertion,
		PackageLicenseConcluded: noAssertion,
		PackageLicenseDeclared:  noAssertion,
		PackageCopyrightText:    noAssertion,
		PrimaryPackagePurpose:   purposeOS,
		PackageSummary:          inv.OS.PrettyName,
	}
	if inv.OS.ID != "" {
		osPkg.PackageComment = "os-release ID=" + inv.OS.ID + " VERSION_ID=" + inv.OS.VersionID
	}
	doc.Packages = append(doc.Packages, osPkg)
	doc.Relationships = append(doc.Relationships, &v2_3.Relationship{
		RefA:         common.MakeDocElementID("", "DOCUMENT"),
		RefB:         common.MakeDocElementID("", osID),
		Relationship: common.TypeRelationshipDescribe,
	})
	ids := map[string]bool{osID: true}
	contains := func(id common.ElementID) {
		doc.Relationships = append(doc.Relationships, &v2_3.Relationship{
			RefA:         common.MakeDocElementID("", osID),
			RefB:         common.MakeDocElementID("", string(id)),
			Relationship: common.TypeRelationshipContains,
		})
	}
	for _, k := range inv.Kernels {
		id := uniqueID(ids, "Kernel-"+k)
		doc.Packages = append(doc.Packages, &v2_3.Package{
			PackageName:             "kernel",
			PackageSPDXIdentifier:   id,
			PackageVersion:          k,
			PackageSupplier:         &common.Supplier{Supplier: noAssertion},
			PackageDownloadLocation: noAssertion,
			PackageLicenseConcluded: noAssertion,
			PackageLicenseDeclared:  noAssertion,
			PackageCopyrightText:    noAssertion,
			PrimaryPackagePurpose:   purposeOther,
			PackageSummary:          "Linux kernel " + k + " (its modules directory or /boot image)",
		})
		contains(id)
	}
	for _, p := range inv.Packages {
		id := uniqueID(ids, "Package-"+p.Manager+"-"+p.Name+"-"+p.Arch)
		sp := &v2_3.Package{
			PackageName:             p.Name,
			PackageSPDXIdentifier:   id,
			PackageVersion:          p.Version,
			PackageSupplier:         supplier(p),
			PackageDownloadLocation: noAssertion,
			PackageLicenseConcluded: noAssertion,
			PackageLicenseDeclared:  noAssertion,
			PackageCopyrightText:    noAssertion,
			PackageComment:          fmt.Sprintf("installed by %s, architecture %s", p.Manager, orNone(p.Arch)),
		}
		if p.State != "" {
			sp.PackageComment += fmt.Sprintf("; dpkg state %s: not fully installed (dpkg-query -W lists it)", p.State)
		}
		if p.Source != "" {
			sp.PackageSourceInfo = "built from source package " + p.Source
		}
		if p.License != "" {
			if expr, ok := licenseExpression(p.License); ok {
				sp.PackageLicenseDeclared = expr
			} else {
				sp.PackageLicenseComments = fmt.Sprintf("license as the %s database holds it: %s", p.Manager, p.License)
			}
		}
		if u := inv.purl(p); u != "" {
			sp.PackageExternalReferences = []*v2_3.PackageExternalReference{{
				Category: common.CategoryPackageManager,
				RefType:  common.TypePackageManagerPURL,
				Locator:  u,
			}}
		}
		doc.Packages = append(doc.Packages, sp)
		contains(id)
	}
	return doc
}

// orgWords mark a supplier that is a group rather than a person
// ("Debian Perl Group", "Ubuntu Developers", "Rocky Enterprise Software
// Foundation").
var orgWords = regexp.MustCompile(`(?i)\b(team|maintainers|packagers|group|project|developers|foundation|community|inc|ltd|llc|gmbh|corporation|software)\b`)

// supplier is the package's supplier as SPDX 2.3 section 7.5 writes it:
// "Organization: name (email)" for an rpm VENDOR or a name that says it
// is a group, "Person: name (email)" for a maintainer or packager, whose
// "name <email>" (deb-control(5), apk, pacman) becomes "name (email)";
// NOASSERTION when the database names none.
func supplier(p Package) *common.Supplier {
	s := strings.Join(strings.Fields(p.Supplier), " ")
	if s == "" {
		return &common.Supplier{Supplier: noAssertion}
	}
	if i := strings.LastIndexByte(s, '<'); i >= 0 && strings.HasSuffix(s, ">") {
		s = strings.TrimSpace(s[:i]) + " (" + s[i+1:len(s)-1] + ")"
	}
	typ := "Person"
	if p.Manager == RPM || orgWords.MatchString(s) {
		typ = "Organization"
	}
	return &common.Supplier{SupplierType: typ, Supplier: s}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// uniqueID makes an element identifier of s (characters outside
// [A-Za-z0-9.-] become "-") that ids does not hold yet, and records it.
func uniqueID(ids map[string]bool, s string) common.ElementID {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			b[i] = '-'
		}
	}
	id := string(b)
	for n := 2; ids[id]; n++ {
		id = fmt.Sprintf("%s-%d", b, n)
	}
	ids[id] = true
	return common.ElementID(id)
}

// licenseExpression returns the database's license text when it is a
// valid SPDX license expression (SPDX 2.3 annex D, with the SPDX license
// list's identifiers), normalized; ok is false otherwise ("GPLv2+", Fedora's
// older short names, free text).
func licenseExpression(s string) (string, bool) {
	s = strings.TrimSpace(s)
	norm, bad := spdxexp.ValidateAndNormalizeLicensesWithOptions([]string{s}, spdxexp.ValidateLicensesOptions{})
	if len(bad) > 0 || len(norm) != 1 {
		return "", false
	}
	return norm[0], true
}

// purl is the package's Package URL (github.com/package-url/purl-spec,
// PURL-TYPES.rst: deb, rpm, apk, alpm): the namespace is the
// distribution's os-release ID, the qualifiers its architecture, the
// distro as ID-VERSION_ID, and for rpm the epoch, which purl keeps out of
// the version.
func (inv *Inventory) purl(p Package) string {
	typ := map[string]string{Dpkg: packageurl.TypeDebian, RPM: packageurl.TypeRPM, Apk: packageurl.TypeApk, Pacman: packageurl.TypeAlpm}[p.Manager]
	if typ == "" {
		return ""
	}
	q := map[string]string{}
	if p.Arch != "" {
		q["arch"] = p.Arch
	}
	if inv.OS.ID != "" {
		q["distro"] = inv.OS.ID
		if inv.OS.VersionID != "" {
			q["distro"] += "-" + inv.OS.VersionID
		}
	}
	version := p.Version
	if p.Manager == RPM {
		if e, rest, ok := strings.Cut(version, ":"); ok && e != "" && strings.Trim(e, "0123456789") == "" {
			q["epoch"] = e
			version = rest
		}
	}
	if p.Source != "" && p.Source != p.Name && (p.Manager == Dpkg || p.Manager == RPM) {
		q["upstream"] = p.Source
	}
	return packageurl.NewPackageURL(typ, inv.OS.ID, p.Name, version, packageurl.QualifiersFromMap(q), "").ToString()
}
