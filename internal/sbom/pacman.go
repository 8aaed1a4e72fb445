package sbom

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// pacmanLocal is pacman's local database (pacman(8) --dbpath, default
// /var/lib/pacman/): a directory per installed package named
// NAME-VERSION, each with a desc file.
const pacmanLocal = "/var/lib/pacman/local"

// readPacman reads each package's desc as libalpm does (lib/libalpm/
// be_local.c, local_db_read): a line "%SECTION%" then its value on the
// next line, or for list sections (%LICENSE%) one value a line up to a
// blank line. %NAME%, %VERSION% (pkgver "[epoch:]ver-rel"), %ARCH%,
// %BASE% (the pkgbase: the source package), %LICENSE% and %PACKAGER% are
// kept; a
// package's licenses are joined with " AND " (each applies to a part of
// the package, and Arch Linux writes them as SPDX identifiers).
func readPacman(r *inroot.Root) ([]Package, []string) {
	there, err := r.Exists(pacmanLocal)
	if !there {
		if err != nil {
			return nil, []string{fmt.Sprintf("%s: %v", pacmanLocal, unwrapPath(err))}
		}
		return nil, nil
	}
	es, err := readDir(r, pacmanLocal)
	if err != nil {
		return nil, []string{fmt.Sprintf("%s: %v", pacmanLocal, unwrapPath(err))}
	}
	var pkgs []Package
	var problems []string
	for _, e := range es {
		if !e.IsDir() { // ALPM_DB_VERSION
			continue
		}
		desc := pacmanLocal + "/" + e.Name() + "/desc"
		data, ok, bad := readDB(r, desc)
		if !ok {
			if bad == "" {
				bad = desc + ": missing"
			}
			problems = append(problems, bad)
			continue
		}
		s := parseDesc(data)
		if len(s["NAME"]) != 1 || len(s["VERSION"]) != 1 {
			problems = append(problems, desc+": no %NAME% or %VERSION%")
			continue
		}
		pkgs = append(pkgs, Package{
			Name: s["NAME"][0], Version: s["VERSION"][0], Arch: first(s["ARCH"]), Source: first(s["BASE"]),
			License: strings.Join(s["LICENSE"], " AND "), Manager: Pacman, Supplier: first(s["PACKAGER"]),
		})
	}
	if len(problems) > 0 {
		return pkgs, []string{fmt.Sprintf("%s: %d package(s) skipped; %s", pacmanLocal, len(problems), problems[0])}
	}
	return pkgs, nil
}

// parseDesc returns each %SECTION%'s values: the lines after it up to a
// blank line.
func parseDesc(data []byte) map[string][]string {
	out := map[string][]string{}
	section := ""
	for _, l := range bytes.Split(data, []byte{'\n'}) {
		line := strings.TrimSpace(string(l))
		switch {
		case line == "":
			section = ""
		case section == "" && len(line) > 2 && line[0] == '%' && line[len(line)-1] == '%':
			section = line[1 : len(line)-1]
			out[section] = []string{}
		case section != "":
			out[section] = append(out[section], line)
		}
	}
	return out
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
