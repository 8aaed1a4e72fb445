package scrub

import (
	"os"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// Artifact is the scrubbed image (the input's file, changed in place), its
// JSON report and the input's SBOM file: as it was when no operation
// changed what it reads (package databases, os-release, kernels), else
// written again and SBOMLabels set.
type Artifact struct {
	Path       string
	Report     string
	SBOM       string                 // the input's, or ""
	SBOMLabels map[string]interface{} // of the SBOM written again; nil: the input's are carried
	Input      packersdk.Artifact
	// Repro is the build's epoch source, kept here: Packer closes the
	// connection to the input artifact when PostProcess returns, so Input
	// answers nothing to the post-processors after this one.
	Repro *repro.Source
	made  packerglue.Stamp // the image file as the scrub left it
}

// BuilderId identifies the post-processor.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files are the image, then the report, then the SBOM when there is one.
func (a *Artifact) Files() []string {
	if a.SBOM != "" {
		return []string{a.Path, a.Report, a.SBOM}
	}
	return []string{a.Path, a.Report}
}

// Id is the image's path.
func (a *Artifact) Id() string { return a.Path }

func (a *Artifact) String() string {
	return packerglue.ArtifactLineSince("scrubbed disk image", a.Path, "report "+a.Report, a.made)
}

// State passes the input's state on (format, registry metadata): the image
// is the same file. The registry metadata takes the SBOMLabels of an SBOM
// written again instead of the input's.
func (a *Artifact) State(name string) interface{} {
	if name == registryimage.ArtifactStateURI && a.SBOMLabels != nil {
		img, err := registryimage.FromArtifact(a,
			registryimage.WithProvider("imagefactory"),
			registryimage.WithSourceID(a.Input.Id()),
			registryimage.SetLabels(packerglue.ReplaceSBOMLabels(a.Input, a.SBOMLabels)))
		if err != nil {
			return nil
		}
		return img
	}
	if name == repro.StateKey && a.Repro.Enabled() {
		return a.Repro.Epoch()
	}
	return a.Input.State(name)
}

// Destroy removes the image and its SBOM (a conversion has its own copy).
// The report stays: it records what was removed, and Packer destroys this
// artifact whenever a later post-processor (a conversion) replaces the
// image.
func (a *Artifact) Destroy() error {
	for _, f := range []string{a.Path, a.SBOM} {
		if f == "" {
			continue
		}
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
