package sparsify

import (
	"fmt"
	"os"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sparsify"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// Artifact is the sparsified (and converted) image, its checksum files and
// the input's SBOM beside it (sparsify changes no package).
type Artifact struct {
	Path          string
	Format        string
	Files_        []string
	Before, After int64                  // allocated bytes of the raw disk before and after trimming
	Shrink        *sparsify.ShrinkResult // what shrink did; nil when not asked
	Input         packersdk.Artifact
	// Repro is the build's, passed on to later post-processors (Packer
	// closes the connection to Input when PostProcess returns); nil: not
	// reproducible.
	Repro *repro.Source
	// SBOMSHA256 is the sha256 of the SBOM copied beside Path (named after
	// it), replacing the input's label; "" when none was copied.
	SBOMSHA256 string
}

// BuilderId identifies the post-processor.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files are the image and its checksum files.
func (a *Artifact) Files() []string { return a.Files_ }

// Id is the image's path.
func (a *Artifact) Id() string { return a.Path }

func (a *Artifact) String() string {
	what := "sparsified " + a.Format + " disk image"
	if a.Format == formatOVA {
		what = "OVA (OVF package) of the sparsified disk"
	}
	return packerglue.ArtifactLine(what, a.Path,
		"allocated "+diskimage.FormatSize(a.After)+", was "+diskimage.FormatSize(a.Before))
}

// State carries the image's format for later post-processors and the HCP
// Packer registry metadata, with the input's as source.
func (a *Artifact) State(name string) interface{} {
	switch name {
	case "image_format":
		return a.Format
	case repro.StateKey:
		if a.Repro.Enabled() {
			return a.Repro.Epoch()
		}
	case "image_size":
		// The virtual size, which shrink changes.
		if a.Shrink != nil {
			return a.Shrink.DiskAfter
		}
	case registryimage.ArtifactStateURI:
		labels := map[string]interface{}{"format": a.Format, "allocated": fmt.Sprint(a.After)}
		packerglue.CarrySBOMLabels(a.Input, labels)
		if a.SBOMSHA256 != "" {
			labels["sbom_sha256"] = a.SBOMSHA256
		}
		img, err := registryimage.FromArtifact(a,
			registryimage.WithProvider("imagefactory"),
			registryimage.WithSourceID(a.Input.Id()),
			registryimage.SetLabels(labels))
		if err != nil {
			return nil
		}
		return img
	}
	if a.Input != nil {
		return a.Input.State(name)
	}
	return nil
}

// Destroy removes the image and its checksum files.
func (a *Artifact) Destroy() error {
	for _, f := range a.Files_ {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
