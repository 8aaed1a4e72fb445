package cloudimport

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

var filterCases = []struct {
	name   string
	f      ImportFilter
	url    string
	part   string // the part refused; "" passes
	option string
	oracle bool // judged by Glance's own code too (no DNS, no loopback)
}{
	{"allowed port", ImportFilter{AllowedPorts: []int{80, 443, 9000}}, "http://192.0.2.10:9000/x.qcow2", "", "", true},
	{"port not allowed", ImportFilter{AllowedPorts: []int{80, 443, 9000}}, "http://192.0.2.10:9001/x.qcow2", "port", "allowed_ports", true},
	{"no port named: not checked", ImportFilter{AllowedPorts: []int{9000}}, "https://192.0.2.10/x.qcow2", "", "", true},
	{"disallowed port", ImportFilter{DisallowedPorts: []int{22}}, "http://192.0.2.10:22/x", "port", "disallowed_ports", true},
	{"port not disallowed", ImportFilter{DisallowedPorts: []int{22}}, "http://192.0.2.10:2222/x", "", "", true},
	{"allowed ports win over disallowed", ImportFilter{AllowedPorts: []int{8080}, DisallowedPorts: []int{8080}}, "http://192.0.2.10:8080/x", "", "", true},
	{"scheme not allowed", ImportFilter{AllowedSchemes: []string{"https"}}, "http://192.0.2.10/x", "scheme", "allowed_schemes", true},
	{"scheme upper-case", ImportFilter{AllowedSchemes: []string{"https"}}, "HTTPS://192.0.2.10/x", "", "", true},
	{"disallowed scheme", ImportFilter{DisallowedSchemes: []string{"http"}}, "http://192.0.2.10/x", "scheme", "disallowed_schemes", true},
	{"host not allowed", ImportFilter{AllowedHosts: []string{"192.0.2.10"}}, "http://192.0.2.11/x", "host", "allowed_hosts", true},
	{"allowed host", ImportFilter{AllowedHosts: []string{"192.0.2.10"}}, "http://192.0.2.10:8080/x", "", "", true},
	{"disallowed IPv6 host, canonical form", ImportFilter{DisallowedHosts: []string{"2001:db8::1"}}, "http://[2001:DB8:0::1]:8080/x", "host", "disallowed_hosts", true},
	{"allowed hosts win over disallowed", ImportFilter{AllowedHosts: []string{"192.0.2.10"}, DisallowedHosts: []string{"192.0.2.10"}}, "http://192.0.2.10/x", "", "", true},
	{"host before port", ImportFilter{AllowedHosts: []string{"192.0.2.10"}, AllowedPorts: []int{80}}, "http://192.0.2.11:81/x", "host", "allowed_hosts", true},
	{"decimal IPv4 refused", ImportFilter{AllowedPorts: []int{80}}, "http://3221225994/x", "host", "", true},
	{"shorthand IPv4 refused", ImportFilter{AllowedPorts: []int{80}}, "http://192.10/x", "host", "", true},
	{"no scheme", ImportFilter{AllowedPorts: []int{80}}, "//192.0.2.10/x", "scheme", "", true},
	// Names need Glance's DNS lookup, which Check leaves out.
	{"name lower-cased, list as written", ImportFilter{AllowedHosts: []string{"Images.Example"}}, "http://Images.Example/x", "host", "allowed_hosts", false},
	{"name", ImportFilter{AllowedHosts: []string{"images.example"}}, "http://IMAGES.example:8080/x", "", "", false},
}

// TestImportFilter: Glance's semantics, table-driven, each verdict also
// asked of the installed Glance's own code when there is one.
func TestImportFilter(t *testing.T) {
	for _, tt := range filterCases {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f.Check(tt.url)
			var fe *FilterError
			switch {
			case tt.part == "" && err != nil:
				t.Fatalf("Check(%s) = %v, want it to pass", tt.url, err)
			case tt.part == "":
			case !errors.As(err, &fe):
				t.Fatalf("Check(%s) = %v, want a FilterError", tt.url, err)
			case fe.Part != tt.part || fe.Option != tt.option || fe.URL != tt.url || !strings.HasPrefix(err.Error(), tt.url+": "):
				t.Errorf("Check(%s) = %+v (%v), want %s refused by %q", tt.url, fe, err, tt.part, tt.option)
			}
		})
	}
	if (ImportFilter{}).IsZero() != true || (ImportFilter{DisallowedPorts: []int{1}}).IsZero() {
		t.Error("IsZero")
	}
	err := ImportFilter{AllowedPorts: []int{80, 443}}.Check("http://192.0.2.10:8080/x")
	if want := "http://192.0.2.10:8080/x: port 8080 is not in allowed_ports [80, 443]"; err == nil || err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

// glanceOracle judges each case with glance.common.utils's
// get_validated_address under the case's lists.
const glanceOracle = `import json, sys
from oslo_config import cfg
from glance.common import utils
cfg.CONF([], project="imagefactory-test", default_config_files=[])
out = []
for c in json.load(sys.stdin):
    for k, v in c["opts"].items():
        cfg.CONF.set_override(k, v, group="import_filtering_opts")
    try:
        utils.get_validated_address(c["url"])
        out.append("")
    except ValueError as e:
        out.append(str(e).split(" ")[0])
print(json.dumps(out))
`

func TestImportFilterAgainstGlance(t *testing.T) {
	if _, err := os.Stat("/usr/lib/python3/dist-packages/glance/common/utils.py"); err != nil {
		t.Skip("Glance's code is not installed (apt-get install python3-glance)")
	}
	type oc struct {
		Opts map[string]any `json:"opts"`
		URL  string         `json:"url"`
	}
	var in []oc
	var idx []int
	for i, tt := range filterCases {
		if !tt.oracle {
			continue
		}
		list := func(s []string) []string { return append([]string{}, s...) }
		ports := func(p []int) []int { return append([]int{}, p...) }
		in = append(in, oc{URL: tt.url, Opts: map[string]any{
			"allowed_schemes": list(tt.f.AllowedSchemes), "disallowed_schemes": list(tt.f.DisallowedSchemes),
			"allowed_hosts": list(tt.f.AllowedHosts), "disallowed_hosts": list(tt.f.DisallowedHosts),
			"allowed_ports": ports(tt.f.AllowedPorts), "disallowed_ports": ports(tt.f.DisallowedPorts),
		}})
		idx = append(idx, i)
	}
	data, _ := json.Marshal(in)
	cmd := exec.Command("/usr/bin/python3", "-c", glanceOracle)
	cmd.Stdin = strings.NewReader(string(data))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Glance's filter: %v", err)
	}
	var verdicts []string
	if err := json.Unmarshal(out, &verdicts); err != nil || len(verdicts) != len(idx) {
		t.Fatalf("Glance's filter answered %q: %v", out, err)
	}
	for j, i := range idx {
		if tt := filterCases[i]; verdicts[j] != tt.part {
			t.Errorf("%s: Glance refuses %q (\"\" passes), the table says %q", tt.name, verdicts[j], tt.part)
		}
	}
}
