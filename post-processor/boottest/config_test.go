package boottest

import (
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
)

// Configure's defaults and the errors that name the user's input.
func TestConfigure(t *testing.T) {
	defer hostcap.SetProber(func(time.Duration) hostcap.Verdict { return hostcap.Verdict{Reason: "no KVM in this test"} })()
	for _, tc := range []struct {
		name  string
		raw   map[string]interface{}
		check func(t *testing.T, c *Config)
		err   string
	}{
		{"defaults", nil, func(t *testing.T, c *Config) {
			if c.BootTimeout != 10*time.Minute || c.BootStallTimeout != 5*time.Minute || c.SettleTimeout != time.Minute ||
				c.Communicator != "ssh" || c.SSHUsername != "root" || c.CPUs != 1 || c.Memory != 1024 ||
				strings.Join(c.Checks, ",") != "host-keys,machine-id,hostname,system-running" || c.LoginPrompt {
				t.Errorf("defaults: %+v", c)
			}
		}, ""},
		{"no checks", map[string]interface{}{"checks": []interface{}{}}, func(t *testing.T, c *Config) {
			if len(c.Checks) != 0 {
				t.Errorf("checks = %v", c.Checks)
			}
		}, ""},
		{"no ssh waits for the login prompt", map[string]interface{}{"communicator": "none"}, func(t *testing.T, c *Config) {
			if !c.LoginPrompt || len(c.Checks) != 0 {
				t.Errorf("login_prompt %v, checks %v", c.LoginPrompt, c.Checks)
			}
		}, ""},
		{"no ssh, nothing to wait for", map[string]interface{}{"communicator": "none", "login_prompt": false}, nil, "nothing to wait for"},
		{"inline without ssh", map[string]interface{}{"communicator": "none", "inline": []interface{}{"true"}}, nil, `checks and inline run over SSH: they need communicator = "ssh"`},
		{"unknown check", map[string]interface{}{"checks": []interface{}{"machine-id", "uptime"}}, nil, `checks: "uptime" is not one of host-keys, machine-id, hostname, system-running`},
		{"bad url", map[string]interface{}{"http": []map[string]interface{}{{"url": "localhost/"}}}, nil, `http[0]: url "localhost/": want http://host[:port]/path`},
		{"bad status", map[string]interface{}{"http": []map[string]interface{}{{"url": "http://localhost/", "status": 42}}}, nil, "http[0]: status 42 is not an HTTP status"},
		{"bad port", map[string]interface{}{"tcp_ports": []interface{}{0}}, nil, "tcp_ports: 0 is not a TCP port"},
		{"bad firmware", map[string]interface{}{"firmware": "coreboot"}, nil, `firmware "coreboot" is not supported`},
		{"kvm refused", map[string]interface{}{"accelerator": "kvm"}, nil, "KVM cannot run a guest on this host"},
		{"net0 not user", map[string]interface{}{"qemuargs": []interface{}{[]interface{}{"-netdev", "tap,id=net0"}}}, nil, "net0 must be user-mode networking"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p PostProcessor
			err := p.Configure(tc.raw)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Configure = %v; want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, &p.config)
		})
	}
}
