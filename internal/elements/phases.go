package elements

import (
	"fmt"
	"strings"
)

// Phase is one of DIB's hook directories.
type Phase struct {
	Name   string // "install.d"
	Inside bool   // run in the image (chroot) rather than on the host
}

// Phases are DIB's phases in disk-image-create's order. In DIB the
// filesystem is made between post-root.d and block-device.d; here the disk
// already exists and is kept, so the phases simply follow each other.
var Phases = []Phase{
	{"root.d", false},
	{"extra-data.d", false},
	{"pre-install.d", true},
	{"install.d", true},
	{"post-install.d", true},
	{"post-root.d", false},
	{"block-device.d", false},
	{"pre-finalise.d", false},
	{"finalise.d", true},
	{"cleanup.d", false},
}

// SelectPhases resolves the user's phase names ("install" or "install.d")
// in DIB's order; none means all.
func SelectPhases(names []string) ([]Phase, error) {
	if len(names) == 0 {
		return Phases, nil
	}
	want := map[string]bool{}
	for _, n := range names {
		if !strings.HasSuffix(n, ".d") {
			n += ".d"
		}
		known := false
		for _, p := range Phases {
			known = known || p.Name == n
		}
		if !known {
			var all []string
			for _, p := range Phases {
				all = append(all, p.Name)
			}
			return nil, fmt.Errorf("unknown phase %q (phases: %s)", n, strings.Join(all, ", "))
		}
		want[n] = true
	}
	var out []Phase
	for _, p := range Phases {
		if want[p.Name] {
			out = append(out, p)
		}
	}
	return out, nil
}
