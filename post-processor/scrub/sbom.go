package scrub

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// changeLinesMax caps each kind of package change in the build output, as
// the builder's.
const changeLinesMax = 20

// sbomInputs are the image paths the builder's SBOM is read from
// (internal/sbom): the package databases, os-release and the kernels. No
// scrub operation touches them (rpm-db removes only what rpm recreates);
// the user's remove_paths may, and the SBOM is then read again.
var sbomInputs = []string{
	"/var/lib/dpkg/status", "/var/lib/dpkg/updates", "/var/lib/rpm", "/usr/lib/sysimage/rpm",
	"/lib/apk/db/installed", "/var/lib/pacman/local",
	"/etc/os-release", "/usr/lib/os-release", "/boot", "/lib/modules", "/usr/lib/modules",
}

// staleSBOM lists the changes of the report to what the SBOM read: a
// path that is one of sbomInputs, lies below one, or holds one.
func staleSBOM(r *scrub.Report) []string {
	var stale []string
	for _, c := range r.Changes {
		if c.Op == "rpm-db" {
			continue
		}
		for _, in := range sbomInputs {
			if within(c.Path, in) || within(in, c.Path) {
				stale = append(stale, string(c.Action)+" "+c.Path+" ("+c.Op+")")
				break
			}
		}
	}
	return stale
}

// within reports whether path p is dir or lies below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// sbomRead is the inventory of the image before the operations (base) and,
// when they touched what it is read from, after them (final, else nil).
type sbomRead struct {
	base, final *sbom.Inventory
	stale       []string // staleSBOM of the report
}

// rewrite reports whether the SBOM must be written again: the operations
// touched its inputs and what it reads differs (a path below /boot that
// is no kernel leaves it as it was: the input's SBOM is carried).
func (r *sbomRead) rewrite() bool {
	return r != nil && r.final != nil && !reflect.DeepEqual(r.base, r.final)
}

// rewriteSBOM writes r.final over the input's SBOM file, atomically, named
// as the input's (the image's file name), with the scrub's repro Source so
// that it stays reproducible; prints the changes against the input's
// inventory; returns the new SBOM registry labels.
func rewriteSBOM(ui packersdk.Ui, file string, r *sbomRead, src *repro.Source) (map[string]interface{}, error) {
	for _, l := range r.final.Incomplete {
		ui.Error("Warning: the SBOM is incomplete: " + l)
	}
	data, err := r.final.SPDX(strings.TrimSuffix(filepath.Base(file), packerglue.SBOMSuffix), src)
	if err != nil {
		return nil, fmt.Errorf("imagefactory-scrub: writing the SBOM: %w", err)
	}
	if err := packerglue.WriteFileAtomic(file, data, 0o644); err != nil {
		return nil, fmt.Errorf("imagefactory-scrub: writing the SBOM %s: %w", file, err)
	}
	labels, err := packerglue.LabelsOf(r.final, file)
	if err != nil {
		return nil, fmt.Errorf("imagefactory-scrub: the SBOM's labels: %w", err)
	}
	ui.Say(strings.Join(sbomChangeLines(file, r), "\n"))
	return labels, nil
}

// sbomChangeLines are the build output of a rewritten SBOM: what the scrub
// touched, then what changed in the inventory against the input's.
func sbomChangeLines(file string, r *sbomRead) []string {
	b, f := r.base, r.final
	lines := []string{fmt.Sprintf("Wrote the SBOM %s again: the scrub changed what it is read from:", file)}
	for _, s := range r.stale {
		lines = append(lines, "  "+s)
	}
	if b.OS != f.OS {
		lines = append(lines, fmt.Sprintf("OS: %s -> %s", b.OS, f.OS))
	}
	if k := func(ks []string) string { return orNone(strings.Join(ks, ", ")) }; !reflect.DeepEqual(b.Kernels, f.Kernels) {
		lines = append(lines, fmt.Sprintf("Kernels: %s -> %s", k(b.Kernels), k(f.Kernels)))
	}
	c := sbom.Diff(b, f)
	lines = append(lines, fmt.Sprintf("Packages against the input: %d added, %d removed, %d upgraded (%d packages)",
		len(c.Added), len(c.Removed), len(c.Upgraded), len(f.Packages)))
	return append(lines, packerglue.ChangeLines(c, changeLinesMax)...)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
