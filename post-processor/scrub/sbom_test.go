package scrub

import (
	"reflect"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
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

// TestSBOMRewrite: the decision to write the SBOM again. Only a re-read
// (the operations touched its inputs) that differs from the input's
// inventory rewrites it; the lines printed name what changed.
func TestSBOMRewrite(t *testing.T) {
	base := &sbom.Inventory{
		OS:      sbom.OS{ID: "debian", VersionID: "12", PrettyName: "Debian GNU/Linux 12 (bookworm)"},
		Kernels: []string{"6.1.0-10-amd64", "6.1.0-9-amd64"},
		Packages: []sbom.Package{
			{Name: "bar", Version: "2.0-1", Arch: "x86_64", Manager: sbom.Pacman},
			{Name: "foo", Version: "1.0-1", Arch: "x86_64", Manager: sbom.Pacman},
		},
	}
	same := *base
	changed := &sbom.Inventory{Kernels: base.Kernels[:1], Packages: base.Packages[:1]}
	for _, c := range []struct {
		name string
		r    *sbomRead
		want bool
	}{
		{"no SBOM", nil, false},
		{"inputs untouched", &sbomRead{base: base}, false},
		{"touched, same inventory", &sbomRead{base: base, final: &same, stale: []string{"removed /boot/grub (remove-paths)"}}, false},
		{"touched, changed", &sbomRead{base: base, final: changed, stale: []string{"removed /etc/os-release (remove-paths)"}}, true},
	} {
		if got := c.r.rewrite(); got != c.want {
			t.Errorf("%s: rewrite = %v, want %v", c.name, got, c.want)
		}
	}
	got := sbomChangeLines("out/t.raw.spdx.json", &sbomRead{base: base, final: changed, stale: []string{"removed /etc/os-release (remove-paths)"}})
	want := []string{
		"Wrote the SBOM out/t.raw.spdx.json again: the scrub changed what it is read from:",
		"  removed /etc/os-release (remove-paths)",
		"OS: Debian GNU/Linux 12 (bookworm) -> unknown",
		"Kernels: 6.1.0-10-amd64, 6.1.0-9-amd64 -> 6.1.0-10-amd64",
		"Packages against the input: 0 added, 1 removed, 0 upgraded (1 packages)",
		"  removed foo:x86_64 (pacman) 1.0-1",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("change lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestArtifactSBOMLabels: the registry metadata carries the input's when
// the SBOM was not written again, else the new SBOM labels with the
// input's other labels.
func TestArtifactSBOMLabels(t *testing.T) {
	in := &packersdk.MockArtifact{IdValue: "out/t.raw", StateValues: map[string]interface{}{
		registryimage.ArtifactStateURI: &registryimage.Image{ImageID: "out/t.raw", Labels: map[string]string{
			"os": "debian", "os_version": "12", "kernel": "6.1.0-9-amd64", "package_count": "2", "sbom_sha256": "ab12", "format": "raw",
		}},
	}}
	a := &Artifact{Path: "out/t.raw", Input: in}
	if got := a.State(registryimage.ArtifactStateURI); got != in.StateValues[registryimage.ArtifactStateURI] {
		t.Errorf("carried: %#v", got)
	}
	a.SBOMLabels = map[string]interface{}{"os": "", "os_version": "", "kernel": "", "package_count": "1", "sbom_sha256": "cd34"}
	img, ok := a.State(registryimage.ArtifactStateURI).(*registryimage.Image)
	want := map[string]string{"os": "", "os_version": "", "kernel": "", "package_count": "1", "sbom_sha256": "cd34", "format": "raw"}
	if !ok || !reflect.DeepEqual(img.Labels, want) || img.ImageID != "out/t.raw" {
		t.Errorf("rewritten: %#v, want labels %v", img, want)
	}
}
