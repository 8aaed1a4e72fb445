package imagefactory

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// Artifact is the image file the builder made.
type Artifact struct {
	Path      string
	Format    string
	Size      int64 // virtual size in bytes
	BaseImage string
	SBOM      string // the SPDX file beside the image, or "" (sbom = false)
	// StateData carries the generated data and the HCP Packer registry
	// metadata.
	StateData map[string]interface{}
	made      packerglue.Stamp // the image file as the build left it
}

func newArtifact(state multistep.StateBag, path string) (*Artifact, error) {
	cfg := configOf(state)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if cfg.Format != "raw" {
		if d, ok := state.GetOk(stateVirtualSize); ok {
			size = d.(int64)
		}
	}
	source := cfg.BaseImage
	if cfg.fromTree() {
		source = describeSource(cfg)
	}
	a := &Artifact{Path: path, Format: cfg.Format, Size: size, BaseImage: source, StateData: map[string]interface{}{}, made: packerglue.StampOf(path)}
	if gd, ok := state.GetOk("generated_data"); ok {
		a.StateData["generated_data"] = gd
	}
	if cfg.repro.Enabled() {
		// The post-processors after this builder derive theirs from it.
		a.StateData[repro.StateKey] = cfg.repro.Epoch()
	}
	labels := map[string]interface{}{
		"format":       cfg.Format,
		"size":         fmt.Sprint(size),
		"strategy":     cfg.Strategy,
		"build_name":   cfg.PackerBuildName,
		"base_format":  fmt.Sprint(state.Get(stateBaseFormat)),
		"backing_file": fmt.Sprint(cfg.UseBackingFile),
	}
	if cfg.repro.Enabled() {
		labels[repro.StateKey] = fmt.Sprint(cfg.repro.Epoch())
	}
	if a, ok := state.GetOk(stateArch); ok {
		// The registry's own field for it (HCP Packer's "architecture").
		labels["architecture"] = fmt.Sprint(a)
	}
	if p, ok := state.GetOk(stateSBOMPath); ok {
		a.SBOM = p.(string)
		sl, err := packerglue.LabelsOf(state.Get(stateSBOM).(*sbom.Inventory), a.SBOM)
		if err != nil {
			return nil, fmt.Errorf("the SBOM's labels: %w", err)
		}
		for k, v := range sl {
			labels[k] = v
		}
	}
	img, err := registryimage.FromArtifact(a,
		registryimage.WithProvider("imagefactory"),
		registryimage.WithSourceID(source),
		registryimage.SetLabels(labels))
	if err != nil {
		return nil, fmt.Errorf("HCP Packer registry metadata: %w", err)
	}
	a.StateData[registryimage.ArtifactStateURI] = img
	return a, nil
}

// BuilderId identifies the builder that made the artifact.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files are the image file, then its SBOM when there is one.
func (a *Artifact) Files() []string {
	if a.SBOM != "" {
		return []string{a.Path, a.SBOM}
	}
	return []string{a.Path}
}

// Id is the image's path.
func (a *Artifact) Id() string { return a.Path }

func (a *Artifact) String() string {
	return packerglue.ArtifactLineSince(a.Format+" disk image", a.Path, diskimage.FormatSize(a.Size), a.made)
}

// State returns generated data, registry metadata, and the image's format
// and size for post-processors ("image_format", "image_size").
func (a *Artifact) State(name string) interface{} {
	switch name {
	case "image_format":
		return a.Format
	case "image_size":
		return a.Size
	}
	return a.StateData[name]
}

// Destroy removes the image file and its SBOM.
func (a *Artifact) Destroy() error {
	for _, f := range a.Files() {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
