// Package version holds the plugin's version, reported to Packer.
package version

import "github.com/hashicorp/packer-plugin-sdk/version"

var (
	// Version is the plugin's semantic version; Packer refuses a plugin
	// without one (`packer plugins install --path`).
	Version = "0.1.0"
	// VersionPrerelease marks development builds ("dev"); empty for releases.
	VersionPrerelease = "dev"
	// VersionMetadata is optional build metadata.
	VersionMetadata = ""
	// PluginVersion is what main registers with the plugin set.
	PluginVersion = version.NewPluginVersion(Version, VersionPrerelease, VersionMetadata)
)
