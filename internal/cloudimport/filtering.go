package cloudimport

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// ImportFilter is a copy of a Glance's web-download import filtering, the
// [import_filtering_opts] of its glance-api.conf. Glance's API does not
// reveal it, so the user states it, and a URL is judged before anything is
// made in the cloud. A nil or empty list is not checked. Glance's own
// defaults are allowed_schemes = [http, https], allowed_ports = [80, 443],
// the other four empty (glance/async_/flows/_internal_plugins/__init__.py).
type ImportFilter struct {
	AllowedSchemes, DisallowedSchemes []string
	AllowedHosts, DisallowedHosts     []string
	AllowedPorts, DisallowedPorts     []int
}

// IsZero tells whether no list is set: nothing to check.
func (f ImportFilter) IsZero() bool {
	return len(f.AllowedSchemes)+len(f.DisallowedSchemes)+len(f.AllowedHosts)+
		len(f.DisallowedHosts)+len(f.AllowedPorts)+len(f.DisallowedPorts) == 0
}

// FilterError is a URL the filter refuses: Part ("scheme", "host" or
// "port") is Value, which Option (Glance's name: allowed_ports...) does
// not admit, List being that option's value. Option is empty when no list
// decides (no scheme; a numeric host that is no IPv4 address).
type FilterError struct {
	URL, Part, Value, Option string
	List                     []string
}

func (e *FilterError) Error() string {
	switch {
	case e.Option == "":
		return fmt.Sprintf("%s: %s %q is refused by Glance's import filtering whatever its lists", e.URL, e.Part, e.Value)
	case strings.HasPrefix(e.Option, "allowed_"):
		return fmt.Sprintf("%s: %s %s is not in %s [%s]", e.URL, e.Part, e.Value, e.Option, strings.Join(e.List, ", "))
	}
	return fmt.Sprintf("%s: %s %s is in %s [%s]", e.URL, e.Part, e.Value, e.Option, strings.Join(e.List, ", "))
}

// Check judges u as Glance does before it fetches u (at the import call,
// and, where the release checks them, at each redirect): as
// get_validated_address of glance/common/utils.py in Debian's glance-api
// 2:25.1.0-2+deb12u5 (validate_import_uri in earlier releases, which
// compare the host unnormalized and follow redirects unchecked):
//   - scheme, then host, then port; at each, a set allowed list wins and
//     its disallowed list is ignored;
//   - the host is the URL's, lower-cased, an IP address in its canonical
//     form; list entries are compared as written;
//   - the port is checked only when the URL names one (http://h/x passes
//     allowed_ports = [8080]).
//
// Not mirrored: Glance's DNS check of host names, and its refusal of
// loopback and link-local addresses not in allowed_hosts (a property of
// the Glance release, not of these lists). The error is a *FilterError.
func (f ImportFilter) Check(u string) error {
	pu, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	refuse := func(part, value, option string, list []string) error {
		return &FilterError{URL: u, Part: part, Value: value, Option: option, List: list}
	}
	scheme := strings.ToLower(pu.Scheme)
	if scheme == "" {
		return refuse("scheme", "", "", nil)
	}
	if err := judge(scheme, f.AllowedSchemes, f.DisallowedSchemes, "schemes", func(s string) error {
		return refuse("scheme", scheme, s, listOf(f.AllowedSchemes, f.DisallowedSchemes, s))
	}); err != nil {
		return err
	}
	host, ok := normalizeHost(strings.ToLower(pu.Hostname()))
	if !ok {
		return refuse("host", pu.Hostname(), "", nil)
	}
	if err := judge(host, f.AllowedHosts, f.DisallowedHosts, "hosts", func(s string) error {
		return refuse("host", host, s, listOf(f.AllowedHosts, f.DisallowedHosts, s))
	}); err != nil {
		return err
	}
	port, _ := strconv.Atoi(pu.Port())
	if port == 0 {
		return nil
	}
	allowed, disallowed := portStrings(f.AllowedPorts), portStrings(f.DisallowedPorts)
	return judge(strconv.Itoa(port), allowed, disallowed, "ports", func(s string) error {
		return refuse("port", strconv.Itoa(port), s, listOf(allowed, disallowed, s))
	})
}

// judge applies one level: the allowed list when set, else the disallowed
// one; refuse gets the deciding option's name.
func judge(v string, allowed, disallowed []string, what string, refuse func(option string) error) error {
	switch {
	case len(allowed) > 0 && !slices.Contains(allowed, v):
		return refuse("allowed_" + what)
	case len(allowed) == 0 && slices.Contains(disallowed, v):
		return refuse("disallowed_" + what)
	}
	return nil
}

func listOf(allowed, disallowed []string, option string) []string {
	if strings.HasPrefix(option, "allowed_") {
		return allowed
	}
	return disallowed
}

func portStrings(ns []int) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = strconv.Itoa(n)
	}
	return out
}

// normalizeHost is Glance's normalize_hostname without its DNS lookup: an
// IP address in canonical form (Python's ipaddress and Go's netip both
// print RFC 5952), a name as it is; a host that is all digits and dots
// but no IPv4 address (2130706433, 127.1) is refused.
func normalizeHost(h string) (string, bool) {
	if h == "" {
		return "", false
	}
	if a, err := netip.ParseAddr(h); err == nil && a.Zone() == "" {
		return a.String(), true
	}
	if strings.Trim(h, "0123456789.") == "" {
		return "", false
	}
	return h, true
}
