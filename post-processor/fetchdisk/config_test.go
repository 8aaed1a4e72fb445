package fetchdisk

import (
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cloudimport"
)

func TestConfigure(t *testing.T) {
	glance := map[string]interface{}{"api": "glance", "endpoint": "http://127.0.0.1:9292"}
	with := func(base map[string]interface{}, kv ...interface{}) map[string]interface{} {
		m := map[string]interface{}{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	fco := map[string]interface{}{"api": "fco", "endpoint": "https://fco:4442", "username": "u", "customer_uuid": "c",
		"password": "p", "vdc_uuid": "v", "product_offer_uuid": "po"}
	tests := []struct {
		name    string
		raw     map[string]interface{}
		wantErr string
		check   func(*testing.T, Config)
	}{
		{"glance defaults", glance, "", func(t *testing.T, c Config) {
			if c.ServeAddress != "127.0.0.1:0" || c.ChecksumType != "" || c.DiskFormatMismatch != "refuse" || c.importTimeout != time.Hour ||
				c.pollInterval != 5*time.Second || c.Retries != 5 {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{"keystone password", with(glance, "auth_url", "https://ks/v3", "username", "u", "password", "p", "project_name", "x"), "", nil},
		{"keystone without secret", with(glance, "auth_url", "https://ks/v3", "username", "u"), "needs password, application_credential_secret or token", nil},
		{"app credential by name needs a user", with(glance, "auth_url", "https://ks/v3", "application_credential_secret", "s", "application_credential_name", "n"), "needs application_credential_id", nil},
		{"glance without endpoint", map[string]interface{}{"api": "glance"}, "needs auth_url (Keystone v3) or endpoint", nil},
		{"no api", map[string]interface{}{}, "api must be set", nil},
		{"bad api", map[string]interface{}{"api": "aws"}, `api "aws" is not one of`, nil},
		{"image_url with checksum", with(glance, "image_url", "http://x/y", "image_checksum", "SHA256:"+strings.Repeat("A", 64)), "", func(t *testing.T, c Config) {
			if c.checksum != (checksum{"sha256", strings.Repeat("a", 64)}) {
				t.Errorf("checksum %+v", c.checksum)
			}
		}},
		{"image_url without checksum", with(glance, "image_url", "http://x/y"), "image_url needs image_checksum", nil},
		{"short checksum", with(glance, "image_url", "http://x/y", "image_checksum", "sha256:abc"), "is not type:hex", nil},
		{"checksum without url", with(glance, "image_checksum", "md5:"+strings.Repeat("0", 32)), "image_checksum needs image_url", nil},
		{"image_url and serve_address", with(glance, "image_url", "http://x/y", "image_checksum", "md5:"+strings.Repeat("0", 32), "serve_address", ":0"), "exclude each other", nil},
		{"wildcard listen without serve_host", with(glance, "serve_address", "0.0.0.0:8080"), `serve_address "0.0.0.0:8080" listens on every address, which the cloud cannot fetch from: set serve_host`, nil},
		{"wildcard listen, no host", with(glance, "serve_address", ":8080"), "set serve_host", nil},
		{"wildcard listen with serve_host", with(glance, "serve_address", "[::]:8080", "serve_host", "factory.example"), "", nil},
		{"tls half", with(glance, "tls_cert", "c.pem"), "tls_cert and tls_key go together", nil},
		{"bad timeout", with(glance, "import_timeout", "soon"), `import_timeout = "soon"`, nil},
		{"negative poll", with(glance, "poll_interval", "-1s"), `poll_interval = "-1s"`, nil},
		{"bad checksum type", with(glance, "checksum_type", "crc32"), `checksum_type "crc32"`, nil},
		{"bad mismatch policy", with(glance, "disk_format_mismatch", "ignore"), `disk_format_mismatch "ignore" is not one of refuse, allow`, nil},
		{"bad visibility", with(glance, "visibility", "everyone"), `visibility "everyone"`, nil},
		{"import filtering", with(glance, "import_allowed_ports", []int{80, 443, 9292}, "import_disallowed_hosts", []string{"169.254.169.254"}), "", func(t *testing.T, c Config) {
			if len(c.importFilter.AllowedPorts) != 3 || c.importFilter.DisallowedHosts[0] != "169.254.169.254" || c.importFilter.IsZero() {
				t.Errorf("filter %+v", c.importFilter)
			}
		}},
		{"import port out of range", with(glance, "import_disallowed_ports", []int{22, 70000}), "import_disallowed_ports: 70000 is not a port (1-65535)", nil},
		{"import filtering is Glance's", with(fco, "import_allowed_ports", []int{80}), `mirror Glance's import filtering: they need api = "glance"`, nil},
		{"fco", fco, "", nil},
		{"fco token", map[string]interface{}{"api": "fco", "endpoint": "e", "token": "t", "vdc_uuid": "v", "product_offer_uuid": "p", "disk_size": "20G"}, "", func(t *testing.T, c Config) {
			if c.diskSize != 20<<30 {
				t.Errorf("disk size %d", c.diskSize)
			}
		}},
		{"fco without credentials", with(fco, "password", ""), "needs token, or username, customer_uuid and password", nil},
		{"fco without vdc", with(fco, "vdc_uuid", ""), "needs vdc_uuid", nil},
		{"fco bad size", with(fco, "disk_size", "big"), "disk_size", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			err := c.prepare(tt.raw)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if err == nil && tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

// TestCheckFilter: a URL the import_* lists refuse is named with the part,
// the option and its list; unset lists check nothing.
func TestCheckFilter(t *testing.T) {
	var c Config
	if err := c.prepare(map[string]interface{}{"api": "glance", "endpoint": "http://g:9292", "image_url": "http://192.0.2.1/x.qcow2",
		"image_checksum": "md5:" + strings.Repeat("0", 32), "import_allowed_ports": []int{80, 443}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ u, what, want string }{
		{"http://192.0.2.1/x.qcow2", "image_url", ""},
		{"http://192.0.2.2:8080/y.qcow2", "image_url", "image_url redirects to http://192.0.2.2:8080/y.qcow2: its port 8080 is not in import_allowed_ports [80, 443], " +
			"so Glance's import filtering would refuse it; nothing was made in the cloud: fix, or make import_allowed_ports what the cloud's glance-api.conf [import_filtering_opts] allowed_ports says"},
		{"http://2130706433/y", "the built-in server's URL", `the built-in server's URL http://2130706433/y: its host "2130706433" is refused whatever the lists say`},
	} {
		err := c.checkFilter(tt.u, tt.what, "fix")
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("checkFilter(%s) = %v, want %q", tt.u, err, tt.want)
		}
	}
	c.importFilter = cloudimport.ImportFilter{}
	if err := c.checkFilter("http://192.0.2.2:8080/y", "image_url", "fix"); err != nil {
		t.Errorf("no lists: %v", err)
	}
}
