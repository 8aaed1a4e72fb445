package sbom

import (
	"cmp"
	"fmt"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// apkInstalled is apk-tools' installed database: every package in it is
// installed (apk keeps no other state there).
const apkInstalled = "/lib/apk/db/installed"

// readApk reads apk's installed database. Its format is the package
// index's (https://wiki.alpinelinux.org/wiki/Apk_spec, "Database";
// apk-tools src/database.c, apk_db_index_read): one paragraph per package,
// paragraphs separated by a blank line, each line a one-letter field, a
// colon and its value, P: the name, V: the version, A: the architecture,
// L: the license, o: the origin (the source package, the aport it was
// built from), m: the maintainer. The file lists (F:, R:, Z: ...) are skipped.
func readApk(r *inroot.Root) ([]Package, []string) {
	data, ok, bad := readDB(r, apkInstalled)
	if !ok {
		return nil, nonEmpty(bad)
	}
	pkgs, problems := parseApk(data)
	if len(problems) > 0 {
		return pkgs, []string{fmt.Sprintf("%s: %d package(s) skipped; %s", apkInstalled, len(problems), problems[0])}
	}
	return pkgs, nil
}

// parseApk returns the packages of an installed database and a problem
// per paragraph it skipped.
func parseApk(data []byte) (pkgs []Package, problems []string) {
	for _, p := range splitParagraphs(data) {
		f := map[byte]string{}
		problem := p.truncated
		for i, line := range p.lines {
			if len(line) < 2 || line[1] != ':' {
				problem = cmp.Or(problem, fmt.Sprintf("line %d: not a field: %q", p.start+i, clip(string(line))))
				break
			}
			switch line[0] {
			case 'P', 'V', 'A', 'L', 'o', 'm':
				f[line[0]] = string(line[2:])
			}
		}
		if problem == "" && (f['P'] == "" || f['V'] == "") {
			problem = fmt.Sprintf("line %d: package without P: or V:", p.start)
		}
		if problem != "" {
			problems = append(problems, problem)
			continue
		}
		pkgs = append(pkgs, Package{Name: f['P'], Version: f['V'], Arch: f['A'], Source: f['o'], License: f['L'], Manager: Apk, Supplier: f['m']})
	}
	return pkgs, problems
}
