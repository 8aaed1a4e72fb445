package fetchdisk

import (
	"context"
	"fmt"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cloudimport"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// Artifact is the image in the cloud.
type Artifact struct {
	APIName    string // glance, fco
	ImageID    string
	Name       string
	Endpoint   string
	Region     string
	DiskFormat string
	Checksum   string // type:hex of what the cloud fetched
	Input      packersdk.Artifact
	api        cloudimport.API
}

// BuilderId identifies the post-processor.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files: the image lives in the cloud; the input's SBOM, describing it,
// stays listed.
func (a *Artifact) Files() []string {
	if a.Input == nil {
		return nil
	}
	if f := packerglue.FindSBOM(a.Input.Files()); f != "" {
		return []string{f}
	}
	return nil
}

// Id is the cloud's image ID.
func (a *Artifact) Id() string { return a.ImageID }

func (a *Artifact) String() string {
	return fmt.Sprintf("%s image %s (%s) at %s", a.APIName, a.ImageID, a.Name, a.Endpoint)
}

// provider is the HCP Packer registry's provider name.
func (a *Artifact) provider() string {
	if a.APIName == "glance" {
		return "openstack"
	}
	return a.APIName
}

// State carries the image ID and HCP Packer registry metadata, with the
// input's ID as source image.
func (a *Artifact) State(name string) interface{} {
	switch name {
	case "image_id":
		return a.ImageID
	case "endpoint":
		return a.Endpoint
	case registryimage.ArtifactStateURI:
		src := ""
		if a.Input != nil {
			src = a.Input.Id()
		}
		region := a.Region
		if region == "" {
			region = a.Endpoint
		}
		img, err := registryimage.FromArtifact(a,
			registryimage.WithProvider(a.provider()),
			registryimage.WithID(a.ImageID),
			registryimage.WithSourceID(src),
			registryimage.WithRegion(region),
			registryimage.SetLabels(a.labels()))
		if err != nil {
			return nil
		}
		return img
	}
	return nil
}

// labels are the registry labels: the import's, and the input's SBOM
// labels (the cloud's image holds the same packages).
func (a *Artifact) labels() map[string]interface{} {
	l := map[string]interface{}{
		"api": a.APIName, "endpoint": a.Endpoint, "name": a.Name,
		"disk_format": a.DiskFormat, "checksum": a.Checksum,
	}
	packerglue.CarrySBOMLabels(a.Input, l)
	return l
}

// Destroy deletes the image from the cloud.
func (a *Artifact) Destroy() error {
	if a.api == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return a.api.Delete(ctx, &cloudimport.Import{ImageID: a.ImageID})
}
