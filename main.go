// Command packer-plugin-imagefactory is the Packer plugin: it registers the
// components (the work lives in internal/), and runs the reap subcommand.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"github.com/imagefactory/packer-plugin-imagefactory/builder/imagefactory"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/boottest"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/fetchdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/scrub"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/sparsify"
	"github.com/imagefactory/packer-plugin-imagefactory/provisioner/elements"
	"github.com/imagefactory/packer-plugin-imagefactory/version"
)

func main() {
	// The chroot's sandbox init (internal/sandbox): the builder starts
	// this binary again as PID 1 of the chroot's namespaces.
	if sandbox.IsInit(os.Args) {
		os.Exit(sandbox.RunInit(os.Args[2:]))
	}
	// Not a Packer command: the user's, to release what a build kept
	// (packer build -on-error=abort) or left behind.
	if len(os.Args) > 1 && os.Args[1] == cleanup.CommandName {
		os.Exit(cleanup.Command(os.Args[2:], os.Stdout, os.Stderr))
	}
	// The builder's child that lists an rpm database (internal/sbom).
	if len(os.Args) > 1 && os.Args[1] == sbom.RPMChildCommand {
		os.Exit(sbom.RunRPMChild(os.Args[2:], os.Stdout, os.Stderr))
	}
	sbom.IsolateRPM = true
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
