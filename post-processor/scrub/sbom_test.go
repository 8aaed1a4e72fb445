package scrub

import (
	"reflect"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// TestStaleSBOM: what remove_paths takes from a package database,
// os-release or the kernels makes the SBOM stale; rpm-db's own removals
// and neighbours of the inputs do not.
func TestStaleSBOM(t *testing.T) {
	r := &scrub.Report{Changes: []scrub.Change{
		{Op: "rpm-db", Path: "/var/lib/rpm/__db.001", Action: scrub.Removed},
		{Op: "package-manager-state", Path: "/var/lib/pacman/db.lck", Action: scrub.Removed},
		{Op: "logfiles", Path: "/var/log/dpkg.log", Action: scrub.Removed},
		{Op: "remove-paths", Path: "/var/lib/dpkg", Action: scrub.Removed},
		{Op: "remove-paths", Path: "/boot/vmlinuz-6.1.0-1-amd64", Action: scrub.Removed},
		{Op: "remove-paths", Path: "/etc/os-release.d", Action: scrub.Removed},
	}}
	want := []string{
		"removed /var/lib/dpkg (remove-paths)",
		"removed /boot/vmlinuz-6.1.0-1-amd64 (remove-paths)",
	}
	if got := staleSBOM(r); !reflect.DeepEqual(got, want) {
		t.Errorf("staleSBOM = %q, want %q", got, want)
	}
	if got := staleSBOM(&scrub.Report{}); got != nil {
		t.Errorf("no changes: %q", got)
	}
}
