// Command packer-plugin-imagefactory is the Packer plugin: it registers the
// components and nothing else (the work lives in internal/).
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/imagefactory/packer-plugin-imagefactory/builder/imagefactory"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/boottest"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/fetchdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/scrub"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/sparsify"
	"github.com/imagefactory/packer-plugin-imagefactory/provisioner/elements"
	"github.com/imagefactory/packer-plugin-imagefactory/version"
)

func main() {
	pps := plugin.NewSet()
	// The default name makes templates say `source "imagefactory" "x"`.
	pps.RegisterBuilder(plugin.DEFAULT_NAME, new(imagefactory.Builder))
	// Post-processors are named imagefactory-<name> in templates.
	pps.RegisterPostProcessor("scrub", new(scrub.PostProcessor))
	pps.RegisterPostProcessor("sparsify", new(sparsify.PostProcessor))
	pps.RegisterPostProcessor("fetchdisk", new(fetchdisk.PostProcessor))
	pps.RegisterPostProcessor("boottest", new(boottest.PostProcessor))
	// Provisioners too: `provisioner "imagefactory-elements"`.
	pps.RegisterProvisioner("elements", new(elements.Provisioner))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
