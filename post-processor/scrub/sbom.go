package scrub

import (
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// sbomInputs are the image paths the builder's SBOM is read from
// (internal/sbom): the package databases, os-release and the kernels. No
// scrub operation touches them (rpm-db removes only what rpm recreates);
// the user's remove_paths may.
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
