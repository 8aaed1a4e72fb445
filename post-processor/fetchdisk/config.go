//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config
//go:generate ../../scripts/struct-markdown.sh

package fetchdisk

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cloudimport"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// Config is the configuration of the imagefactory-fetchdisk post-processor.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// The cloud's import API: `glance` (OpenStack Glance, interoperable
	// import with `web-download`) or `fco` (Flexiant Cloud Orchestrator,
	// `fetchDisk`).
	API string `mapstructure:"api" required:"true"`
	// The image's name in the cloud. Defaults to the disk file's name
	// without its extension.
	ImageName string `mapstructure:"image_name"`

	// Where the cloud fetches the image from, when it is already published
	// (by an earlier post-processor, say). Unset: the post-processor serves
	// the artifact's disk itself for the life of the import. It is probed
	// before the import (one ranged GET, following redirects): a 4xx or
	// 5xx fails the build there, and the format it serves must be
	// `disk_format`'s.
	ImageURL string `mapstructure:"image_url"`
	// The checksum of what `image_url` serves, as `type:hex` (`sha512`,
	// `sha384`, `sha256`, `sha1` or `md5`). Required with `image_url`. In
	// another algorithm than the cloud's, it is verified by downloading
	// `image_url` once.
	ImageChecksum string `mapstructure:"image_checksum"`
	// The hash the post-processor computes of a disk it serves, as it
	// serves it: `sha512`, `sha256` or `md5`. Default: for Glance, the
	// algorithm Glance hashes with (its `hashing_algorithm`, found before
	// the import by uploading one byte to a probe image); for FCO,
	// `sha512`.
	ChecksumType string `mapstructure:"checksum_type"`
	// The built-in server's listen address, `host:port` (port 0 picks a
	// free one). Default `127.0.0.1:0`: set an address the cloud can reach.
	ServeAddress string `mapstructure:"serve_address"`
	// The host name or address (optionally `:port`) the cloud reaches the
	// built-in server by, when it is not the listen address's (a wildcard
	// listen, NAT).
	ServeHost string `mapstructure:"serve_host"`
	// A PEM certificate (chain) file: the built-in server speaks HTTPS.
	TLSCert string `mapstructure:"tls_cert"`
	// The PEM private key of `tls_cert`.
	TLSKey string `mapstructure:"tls_key"`

	// How long the whole import may take (`90m`, `2h`). Default `60m`.
	ImportTimeout string `mapstructure:"import_timeout"`
	// How often the import is polled. Default `5s`.
	PollInterval string `mapstructure:"poll_interval"`
	// Retries of a call that got 429, a 5xx other than 501 or a dropped
	// connection, with exponential backoff from 1 s (`Retry-After`
	// honoured). Other answers, 501 Not Implemented among them, are final
	// at once. Default 5.
	Retries int `mapstructure:"retries"`
	// Skip TLS verification of the cloud's API (not of anything else).
	Insecure bool `mapstructure:"insecure"`

	// The API's URL: Glance's image endpoint (found in Keystone's catalog
	// when `auth_url` is set and this is not), or FCO's base URL.
	Endpoint string `mapstructure:"endpoint"`
	// A token: Glance's `X-Auth-Token` (with `endpoint`, or exchanged at
	// Keystone with `auth_url`), or FCO's API token. Sensitive.
	Token string `mapstructure:"token"`
	// The user name: Keystone's, or FCO's (sent as `user/customer_uuid`).
	Username string `mapstructure:"username"`
	// The password for `username`. Sensitive.
	Password string `mapstructure:"password"`

	// Glance: Keystone v3's URL (`https://keystone:5000/v3`). Unset: no
	// Keystone; `endpoint` with `token`, or unauthenticated.
	AuthURL string `mapstructure:"auth_url"`
	// Glance: the user's ID, instead of `username` and `user_domain_name`.
	UserID string `mapstructure:"user_id"`
	// Glance: the user's domain. Default `Default`.
	UserDomainName string `mapstructure:"user_domain_name"`
	// Glance: the project to scope the token to, by name.
	ProjectName string `mapstructure:"project_name"`
	// Glance: the project to scope the token to, by ID.
	ProjectID string `mapstructure:"project_id"`
	// Glance: the project's domain. Default `Default`.
	ProjectDomainName string `mapstructure:"project_domain_name"`
	// Glance: an application credential's ID.
	ApplicationCredentialID string `mapstructure:"application_credential_id"`
	// Glance: an application credential's name (with `username`).
	ApplicationCredentialName string `mapstructure:"application_credential_name"`
	// Glance: the application credential's secret. Sensitive.
	ApplicationCredentialSecret string `mapstructure:"application_credential_secret"`
	// Glance: the catalog region of the image endpoint.
	Region string `mapstructure:"region"`
	// Glance: the catalog interface: `public` (default), `internal`, `admin`.
	EndpointInterface string `mapstructure:"endpoint_interface"`
	// Glance: the image's `disk_format`. Default: the artifact's format
	// read from its content (`raw`, `qcow2`, or `iso` for an ISO 9660
	// image). One the content contradicts (the served file's, or what
	// `image_url` serves, read before the import) is refused.
	DiskFormat string `mapstructure:"disk_format"`
	// Glance: `refuse` (default) or `allow`: import even when
	// `disk_format` contradicts the content, with a warning.
	DiskFormatMismatch string `mapstructure:"disk_format_mismatch"`
	// Glance: the schemes web-download may fetch from, as the cloud's
	// glance-api.conf `[import_filtering_opts] allowed_schemes` says
	// (Glance's default: `http`, `https`). With any of the six `import_*`
	// lists set, the URL Glance would fetch (`image_url` and every redirect
	// it takes, or the built-in server's URL) is judged by Glance's rules
	// before anything is made in the cloud. All unset (the default): not
	// checked here; Glance refuses at the import call.
	ImportAllowedSchemes []string `mapstructure:"import_allowed_schemes"`
	// Glance: `[import_filtering_opts] disallowed_schemes` (Glance's
	// default: none). Ignored when `import_allowed_schemes` is set, as
	// Glance ignores it.
	ImportDisallowedSchemes []string `mapstructure:"import_disallowed_schemes"`
	// Glance: `[import_filtering_opts] allowed_hosts` (Glance's default:
	// none, any host). Compared as Glance compares: the URL's host
	// lower-cased, IP addresses in canonical form, entries as written.
	ImportAllowedHosts []string `mapstructure:"import_allowed_hosts"`
	// Glance: `[import_filtering_opts] disallowed_hosts` (Glance's default:
	// none). Ignored when `import_allowed_hosts` is set.
	ImportDisallowedHosts []string `mapstructure:"import_disallowed_hosts"`
	// Glance: `[import_filtering_opts] allowed_ports` (Glance's default:
	// `80`, `443`). As in Glance, only a port the URL names is checked.
	ImportAllowedPorts []int `mapstructure:"import_allowed_ports"`
	// Glance: `[import_filtering_opts] disallowed_ports` (Glance's default:
	// none). Ignored when `import_allowed_ports` is set.
	ImportDisallowedPorts []int `mapstructure:"import_disallowed_ports"`
	// Glance: the image's `container_format`. Default `bare`.
	ContainerFormat string `mapstructure:"container_format"`
	// Glance: `private` (default), `shared`, `community` or `public`.
	Visibility string `mapstructure:"visibility"`
	// Glance: image properties (`os_distro`, `hw_disk_bus`...).
	Properties map[string]string `mapstructure:"properties"`
	// Glance: image tags.
	Tags []string `mapstructure:"tags"`

	// FCO: the customer's UUID (basic auth is `username/customer_uuid`).
	CustomerUUID string `mapstructure:"customer_uuid"`
	// FCO: the VDC of the skeleton disk.
	VDCUUID string `mapstructure:"vdc_uuid"`
	// FCO: the cluster of the skeleton disk.
	ClusterUUID string `mapstructure:"cluster_uuid"`
	// FCO: the disk product offer of the skeleton disk.
	ProductOfferUUID string `mapstructure:"product_offer_uuid"`
	// FCO: the skeleton disk's size (`20G`). Default: the image's virtual
	// size, rounded up to GiB.
	DiskSize string `mapstructure:"disk_size"`
	// FCO: make an image of the fetched disk (`makeImage`).
	MakeImage bool `mapstructure:"make_image"`
	// FCO: long-poll `waitForJob` instead of reading the job every
	// `poll_interval`.
	WaitForJob bool `mapstructure:"wait_for_job"`

	ctx           interpolate.Context
	importTimeout time.Duration
	pollInterval  time.Duration
	diskSize      int64
	checksum      checksum
	importFilter  cloudimport.ImportFilter
}

type checksum struct{ typ, value string }

var hexLen = map[string]int{"md5": 32, "sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}

var hexRE = regexp.MustCompile(`^[0-9a-fA-F]+$`)

// parseChecksum reads "type:hex".
func parseChecksum(s string) (checksum, error) {
	typ, value, ok := strings.Cut(s, ":")
	n, known := hexLen[strings.ToLower(typ)]
	if !ok || !known || len(value) != n || !hexRE.MatchString(value) {
		return checksum{}, fmt.Errorf("image_checksum %q is not type:hex with type one of md5, sha1, sha256, sha384, sha512", s)
	}
	return checksum{strings.ToLower(typ), strings.ToLower(value)}, nil
}

// prepare decodes and validates the configuration.
func (c *Config) prepare(raws ...interface{}) error {
	if err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderID,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
	}, raws...); err != nil {
		return err
	}
	// Secrets never reach a log, whatever prints them.
	packersdk.LogSecretFilter.Set(c.Password, c.Token, c.ApplicationCredentialSecret)

	var errs *packersdk.MultiError
	add := func(format string, args ...any) { errs = packersdk.MultiErrorAppend(errs, fmt.Errorf(format, args...)) }
	switch c.API {
	case "glance":
		if c.AuthURL == "" && c.Endpoint == "" {
			add("api = \"glance\" needs auth_url (Keystone v3) or endpoint")
		}
		if c.AuthURL != "" && c.Token == "" && c.ApplicationCredentialSecret == "" && c.Password == "" {
			add("auth_url needs password, application_credential_secret or token")
		}
		if c.ApplicationCredentialSecret != "" && c.ApplicationCredentialID == "" && (c.ApplicationCredentialName == "" || (c.Username == "" && c.UserID == "")) {
			add("application_credential_secret needs application_credential_id, or application_credential_name with username or user_id")
		}
	case "fco":
		if c.Endpoint == "" {
			add("api = \"fco\" needs endpoint")
		}
		if c.Token == "" && (c.Username == "" || c.CustomerUUID == "" || c.Password == "") {
			add("api = \"fco\" needs token, or username, customer_uuid and password")
		}
		for k, v := range map[string]string{"vdc_uuid": c.VDCUUID, "product_offer_uuid": c.ProductOfferUUID} {
			if v == "" {
				add("api = \"fco\" needs %s", k)
			}
		}
	case "":
		add("api must be set: glance or fco")
	default:
		add("api %q is not one of glance, fco", c.API)
	}
	if c.ImageURL != "" {
		if c.ImageChecksum == "" {
			add("image_url needs image_checksum (type:hex)")
		} else if cs, err := parseChecksum(c.ImageChecksum); err != nil {
			add("%v", err)
		} else {
			c.checksum = cs
		}
		if c.ServeAddress != "" || c.TLSCert != "" || c.ServeHost != "" {
			add("image_url and the built-in server (serve_address, serve_host, tls_cert) exclude each other")
		}
	} else if c.ImageChecksum != "" {
		add("image_checksum needs image_url (a served disk is hashed by the post-processor)")
	}
	switch c.DiskFormatMismatch {
	case "":
		c.DiskFormatMismatch = "refuse"
	case "refuse", "allow":
	default:
		add("disk_format_mismatch %q is not one of refuse, allow", c.DiskFormatMismatch)
	}
	switch c.ChecksumType {
	case "", "sha512", "sha256", "md5":
	default:
		add("checksum_type %q is not one of sha512, sha256, md5", c.ChecksumType)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		add("tls_cert and tls_key go together")
	}
	if c.ServeAddress == "" {
		c.ServeAddress = "127.0.0.1:0"
	} else if c.ImageURL == "" && c.ServeHost == "" && wildcard(c.ServeAddress) {
		// The URL would name 0.0.0.0: the cloud would try for
		// import_timeout and fail.
		add("serve_address %q listens on every address, which the cloud cannot fetch from: set serve_host to this host's name or address as the cloud reaches it", c.ServeAddress)
	}
	var err error
	if c.importTimeout, err = duration("import_timeout", c.ImportTimeout, 60*time.Minute); err != nil {
		add("%v", err)
	}
	if c.pollInterval, err = duration("poll_interval", c.PollInterval, 5*time.Second); err != nil {
		add("%v", err)
	}
	if c.Retries < 0 {
		add("retries must not be negative")
	} else if c.Retries == 0 {
		c.Retries = 5
	}
	if c.DiskSize != "" {
		if c.diskSize, err = diskimage.ParseSize(c.DiskSize); err != nil {
			add("disk_size: %v", err)
		}
	}
	c.importFilter = cloudimport.ImportFilter{
		AllowedSchemes: c.ImportAllowedSchemes, DisallowedSchemes: c.ImportDisallowedSchemes,
		AllowedHosts: c.ImportAllowedHosts, DisallowedHosts: c.ImportDisallowedHosts,
		AllowedPorts: c.ImportAllowedPorts, DisallowedPorts: c.ImportDisallowedPorts,
	}
	if !c.importFilter.IsZero() && c.API != "glance" {
		add("import_allowed_* and import_disallowed_* mirror Glance's import filtering: they need api = \"glance\"")
	}
	for i, ports := range [][]int{c.ImportAllowedPorts, c.ImportDisallowedPorts} {
		for _, p := range ports {
			if p < 1 || p > 65535 {
				add("%s: %d is not a port (1-65535)", []string{"import_allowed_ports", "import_disallowed_ports"}[i], p)
			}
		}
	}
	switch c.Visibility {
	case "", "private", "shared", "community", "public":
	default:
		add("visibility %q is not one of private, shared, community, public", c.Visibility)
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	return nil
}

func duration(key, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s = %q is not a positive duration like 90m", key, s)
	}
	return d, nil
}

// wildcard says whether a listen address host:port names no host, or the
// unspecified address (0.0.0.0, ::).
func wildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false // net.Listen reports it
	}
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}
