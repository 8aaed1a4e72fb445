package sparsify

import (
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"
)

// TestArtifactCarriesSBOMLabels: the output's registry metadata keeps the
// input's SBOM labels beside sparsify's own.
func TestArtifactCarriesSBOMLabels(t *testing.T) {
	in := &packersdk.MockArtifact{IdValue: "out/t.raw", StateValues: map[string]interface{}{
		registryimage.ArtifactStateURI: &registryimage.Image{ImageID: "out/t.raw", ProviderName: "imagefactory", Labels: map[string]string{
			"os": "debian", "os_version": "12", "kernel": "6.1.0-28-amd64", "package_count": "243", "sbom_sha256": "ab12", "format": "raw",
		}},
	}}
	a := &Artifact{Path: "out/t.qcow2", Format: "qcow2", After: 42, Input: in}
	img, ok := a.State(registryimage.ArtifactStateURI).(*registryimage.Image)
	if !ok {
		t.Fatalf("no registry metadata: %#v", a.State(registryimage.ArtifactStateURI))
	}
	want := map[string]string{"os": "debian", "os_version": "12", "kernel": "6.1.0-28-amd64", "package_count": "243",
		"sbom_sha256": "ab12", "format": "qcow2", "allocated": "42"}
	for k, v := range want {
		if img.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (all: %v)", k, img.Labels[k], v, img.Labels)
		}
	}
	// The SBOM copied beside the output is another file: its own sum.
	a.SBOMSHA256 = "cd34"
	if img := a.State(registryimage.ArtifactStateURI).(*registryimage.Image); img.Labels["sbom_sha256"] != "cd34" {
		t.Errorf("label sbom_sha256 = %q, want the copy's cd34", img.Labels["sbom_sha256"])
	}
}
