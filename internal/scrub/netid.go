package scrub

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Network identity: what ties a clone to the factory's NIC or network.
//
// "The factory's NIC" is any hard-coded MAC binding in a file the image
// ships (virt-sysprep's net-hwaddr treats every HWADDR= so): an ifcfg
// HWADDR=, a NetworkManager mac-address=, a systemd [Match] MACAddress= or
// PermanentMACAddress=, a netplan match.macaddress. A clone has other NICs,
// so such a binding only makes the profile miss them. A line that SETS an
// address (ifcfg MACADDR=, NM cloned-mac-address=, systemd [Link]
// MACAddress=, netplan macaddress:) is configuration and stays, unless the
// address is one of the factory's bound MACs: then every clone would take
// the factory NIC's address, and two clones on one segment would collide.
//
// Configuration stays, minus its binding; state goes. virt-sysprep's
// net-nmconn removes every keyfile (Red Hat family only), which also throws
// away a profile made on purpose (a static address for a known network);
// osbuild and kiwi cloud images ship no profile at all and let NM's
// auto-default or cloud-init make one at boot. Here a profile survives
// without its binding: NM applies a profile without mac-address= (and
// without interface-name=) to any device of its type (nm-settings-nmcli(5),
// 802-3-ethernet.mac-address). A profile cloud-init generated is edited
// the same way; cloud-init writes it anew for a new instance.

// keyfileDir is NetworkManager's keyfile directory. In /etc NM loads files
// with and without the .nmconnection extension (for backward
// compatibility, NetworkManager src/core/settings/plugins/keyfile,
// _ignore_filename).
const keyfileDir = "/etc/NetworkManager/system-connections"

// netGlobs are the configuration files that may bind to the factory's NIC.
var (
	networkdGlobs = []string{"/etc/systemd/network/*.network", "/etc/systemd/network/*.link", "/etc/systemd/network/*.netdev"}
	netplanGlobs  = []string{"/etc/netplan/*.yaml", "/etc/netplan/*.yml"}
)

var macRE = regexp.MustCompile(`(?i)\b[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}\b`)

// normMAC returns a 6-byte MAC in lower-case colon form, or "" when s is
// none. It takes "52:54:00:AB:CD:EF", "52-54-...", quoted values, and the
// old keyfile form of decimal bytes "82;84;0;171;205;239;".
func normMAC(s string) string {
	s = strings.Trim(strings.TrimSpace(s), `"'`)
	if strings.Contains(s, ";") {
		parts := strings.Split(strings.TrimSuffix(s, ";"), ";")
		if len(parts) != 6 {
			return ""
		}
		out := make([]string, 6)
		for i, p := range parts {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || n < 0 || n > 255 {
				return ""
			}
			out[i] = fmt.Sprintf("%02x", n)
		}
		return strings.Join(out, ":")
	}
	if len(s) != 17 || !macRE.MatchString(s) {
		return ""
	}
	return strings.ToLower(strings.ReplaceAll(s, "-", ":"))
}

// factoryMACs is every MAC address the image binds a configuration to (see
// above), plus the MACs NetworkManager's no-auto-default.state and udev's
// persistent-net rules name. Read once per run, before any network
// operation edits a file.
func (c *Context) factoryMACs() map[string]bool {
	if c.netMACs != nil {
		return c.netMACs
	}
	m := map[string]bool{}
	add := func(v string) {
		for _, f := range strings.Fields(v) {
			if n := normMAC(f); n != "" {
				m[n] = true
			}
		}
	}
	forFiles := func(fn func(p, data string), globs ...string) {
		matches, _ := c.globAll(globs...)
		for _, p := range matches {
			if data, _, ok, _ := c.regularFile(p); ok {
				fn(p, string(data))
			}
		}
	}
	forFiles(func(_, data string) {
		for _, l := range strings.Split(data, "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && k == "HWADDR" {
				add(v)
			}
		}
	}, ifcfgGlob)
	forFiles(func(_, data string) {
		for _, l := range strings.Split(data, "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && strings.TrimSpace(k) == "mac-address" {
				add(v)
			}
		}
	}, keyfileDir+"/*")
	forFiles(func(_, data string) {
		section := ""
		for _, l := range strings.Split(data, "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "[") {
				section = l
			} else if k, v, ok := strings.Cut(l, "="); ok && section == "[Match]" &&
				(strings.TrimSpace(k) == "MACAddress" || strings.TrimSpace(k) == "PermanentMACAddress") {
				add(v)
			}
		}
	}, networkdGlobs...)
	forFiles(func(_, data string) {
		var doc yaml.Node
		if yaml.Unmarshal([]byte(data), &doc) == nil {
			netplanDefs(&doc, func(def *yaml.Node) {
				if match := mapValue(def, "match"); match != nil {
					if v := mapValue(match, "macaddress"); v != nil {
						add(v.Value)
					}
				}
			})
		}
	}, netplanGlobs...)
	forFiles(func(_, data string) {
		for _, mac := range macRE.FindAllString(data, -1) {
			add(mac)
		}
	}, "/var/lib/NetworkManager/no-auto-default.state", "/etc/udev/rules.d/70-persistent-net.rules")
	c.netMACs = m
	return m
}

// editFile rewrites the regular file p with what edit returns, keeping
// its mode, when edit reports a change. Symlinks are not edited through.
func (c *Context) editFile(p string, edit func(string) (string, bool, error)) error {
	data, perm, ok, err := c.regularFile(p)
	if err != nil || !ok {
		return err
	}
	out, changed, err := edit(string(data))
	if err != nil {
		return fmt.Errorf("%s in image: %w", p, err)
	}
	if !changed {
		return nil
	}
	return c.writeFile(p, []byte(out), perm)
}

// globAll expands every glob; a failing one is reported, the others used.
func (c *Context) globAll(globs ...string) ([]string, error) {
	var all []string
	var errs []error
	for _, g := range globs {
		matches, err := c.glob(g)
		errs = append(errs, err)
		all = append(all, matches...)
	}
	return all, errors.Join(errs...)
}

// editGlobs runs editFile on every file the globs match.
func (c *Context) editGlobs(edit func(p, data string) (string, bool, error), globs ...string) error {
	matches, err := c.globAll(globs...)
	errs := []error{err}
	for _, p := range matches {
		errs = append(errs, c.editFile(p, func(s string) (string, bool, error) { return edit(p, s) }))
	}
	return errors.Join(errs...)
}

// keyValue splits "KEY=value" (spaces around the key allowed, as in INI
// files); ok is false for comments, section headers and other lines.
func keyValue(line string) (key, value string, ok bool) {
	t := strings.TrimSpace(line)
	if t == "" || t[0] == '#' || t[0] == ';' || t[0] == '[' {
		return "", "", false
	}
	k, v, ok := strings.Cut(t, "=")
	return strings.TrimSpace(k), strings.TrimSpace(v), ok
}

func netHwaddrOp() Operation {
	return Operation{
		Name: "net-hwaddr",
		Description: "Remove hard-coded bindings to the factory's NIC: `HWADDR=` in `" + ifcfgGlob + "` (as virt-sysprep, " +
			"but on every family); `MACAddress=`/`PermanentMACAddress=` in the `[Match]` section of " +
			"`/etc/systemd/network/*.network` and `*.link` (a `.link` file left with no match is removed: it would " +
			"apply to every interface; a `.network` file gets `Type=ether` instead); `macaddress:` under `match:` in " +
			"`/etc/netplan/*.yaml`, with the `set-name:` bound to it (the definition's ID names the interface then). " +
			"A line that sets an address (`MACADDR=`, `[Link]` or `.netdev` `[NetDev]` `MACAddress=`, netplan `macaddress:`) is removed only when " +
			"it sets one of those bound MACs; other set addresses are configuration and stay.",
		Default: true,
		Run: func(c *Context) error {
			macs := c.factoryMACs()
			return errors.Join(
				c.editGlobs(func(_, s string) (string, bool, error) {
					out, changed := editIfcfgMACs(s, macs)
					return out, changed, nil
				}, ifcfgGlob),
				c.editNetworkd(macs),
				c.editGlobs(func(_, s string) (string, bool, error) { return editNetplan(s, macs) }, netplanGlobs...),
			)
		},
	}
}

// editIfcfgMACs drops HWADDR= and a MACADDR= that sets a factory MAC.
func editIfcfgMACs(s string, macs map[string]bool) (string, bool) {
	return dropLines(s, func(l string) bool {
		k, v, ok := keyValue(l)
		return ok && (k == "HWADDR" || k == "MACADDR" && macs[normMAC(v)])
	})
}

// dropLines removes the lines drop selects; it reports whether any went.
func dropLines(s string, drop func(string) bool) (string, bool) {
	var out strings.Builder
	changed := false
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" && drop(strings.TrimSuffix(l, "\n")) {
			changed = true
			continue
		}
		out.WriteString(l)
	}
	return out.String(), changed
}

// editNetworkd edits systemd-networkd's .network and udev's .link files
// (systemd.network(5), systemd.link(5)): a [Match] section without any
// match applies to every interface, so a .link file whose only match was
// the MAC (a persistent name rule for the factory's NIC, like udev's
// 70-persistent-net.rules) is removed, and a .network file so left gets
// Type=ether, keeping its configuration for any Ethernet device as an NM
// profile without mac-address= does.
func (c *Context) editNetworkd(macs map[string]bool) error {
	matches, err := c.globAll(networkdGlobs...)
	errs := []error{err}
	for _, p := range matches {
		data, perm, ok, err := c.regularFile(p)
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		out, changed, emptyMatch := editNetworkdFile(string(data), macs, strings.HasSuffix(p, ".network"))
		switch {
		case emptyMatch && strings.HasSuffix(p, ".link"):
			errs = append(errs, c.removeOne(p))
		case changed:
			errs = append(errs, c.writeFile(p, []byte(out), perm))
		}
	}
	return errors.Join(errs...)
}

// editNetworkdFile removes MAC matches from [Match] and factory MACs set in
// [Link] (.link, .network) or [NetDev] (.netdev, systemd.netdev(5));
// emptyMatch tells that a [Match] section lost its last match.
func editNetworkdFile(s string, macs map[string]bool, network bool) (out string, changed, emptyMatch bool) {
	lines := strings.SplitAfter(s, "\n")
	type sect struct {
		name            string
		matches, macIdx int // remaining match keys; index of the first MAC line dropped (-1: none)
	}
	var sections []*sect
	var cur *sect
	keep := make([]bool, len(lines))
	for i, l := range lines {
		keep[i] = true
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			cur = &sect{name: t, macIdx: -1}
			sections = append(sections, cur)
			continue
		}
		k, v, ok := keyValue(l)
		if !ok || cur == nil {
			continue
		}
		switch {
		case cur.name == "[Match]" && (k == "MACAddress" || k == "PermanentMACAddress"):
			keep[i] = false
			if cur.macIdx < 0 {
				cur.macIdx = i
			}
		case cur.name == "[Match]":
			cur.matches++
		case (cur.name == "[Link]" || cur.name == "[NetDev]") && k == "MACAddress" && macs[normMAC(v)]:
			keep[i] = false
		}
	}
	fill := map[int]bool{}
	for _, sc := range sections {
		if sc.name == "[Match]" && sc.macIdx >= 0 && sc.matches == 0 {
			emptyMatch = true
			fill[sc.macIdx] = true
		}
	}
	var b strings.Builder
	for i, l := range lines {
		if fill[i] && network {
			b.WriteString("Type=ether\n")
		}
		if keep[i] {
			b.WriteString(l)
		} else {
			changed = true
		}
	}
	return b.String(), changed, emptyMatch
}

// netplanDefs calls fn on every device definition of a netplan document
// (network: {ethernets: {ID: DEF}, wifis: ..., ...}).
func netplanDefs(doc *yaml.Node, fn func(def *yaml.Node)) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return
	}
	network := mapValue(doc.Content[0], "network")
	if network == nil || network.Kind != yaml.MappingNode {
		return
	}
	for i := 1; i < len(network.Content); i += 2 {
		kind := network.Content[i]
		if kind.Kind != yaml.MappingNode {
			continue
		}
		for j := 1; j < len(kind.Content); j += 2 {
			if kind.Content[j].Kind == yaml.MappingNode {
				fn(kind.Content[j])
			}
		}
	}
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func mapDelete(m *yaml.Node, key string) bool {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return true
		}
	}
	return false
}

// editNetplan removes match.macaddress and the set-name bound to it from
// every definition (netplan(5): set-name requires match), the match when
// it is left empty (the definition's ID then names the interface), and a
// macaddress: that sets a factory MAC. The file is re-encoded (2-space
// indent, comments kept) only when something changed.
func editNetplan(s string, macs map[string]bool) (string, bool, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(s), &doc); err != nil {
		return s, false, fmt.Errorf("not valid YAML, so its MAC bindings cannot be removed (%v); fix or remove it (remove_paths)", err)
	}
	changed := false
	netplanDefs(&doc, func(def *yaml.Node) {
		if match := mapValue(def, "match"); match != nil && match.Kind == yaml.MappingNode && mapDelete(match, "macaddress") {
			changed = true
			mapDelete(def, "set-name")
			if len(match.Content) == 0 {
				mapDelete(def, "match")
			}
		}
		if v := mapValue(def, "macaddress"); v != nil && macs[normMAC(v.Value)] {
			changed = mapDelete(def, "macaddress") || changed
		}
	})
	if !changed {
		return s, false, nil
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return s, false, err
	}
	enc.Close()
	return b.String(), true, nil
}

// nmStateFiles are what a running NetworkManager leaves in
// /var/lib/NetworkManager that belongs to one machine (NetworkManager(8),
// FILES): secret_key seeds the stable-privacy IPv6 addresses (RFC 7217),
// stable cloned MACs and DHCP client IDs, so clones sharing it derive the
// same ones; seen-bssids lists the factory's Wi-Fi access points,
// timestamps when its profiles were last up, no-auto-default.state the
// MACs of its devices. NetworkManager.state (radio switches) and
// NetworkManager-intern.conf (settings made over D-Bus) hold no identity
// and stay; leases go with dhcp-client-state.
var nmStateFiles = []string{
	"/var/lib/NetworkManager/secret_key", "/var/lib/NetworkManager/seen-bssids",
	"/var/lib/NetworkManager/timestamps", "/var/lib/NetworkManager/no-auto-default.state",
}

func netNMConnOp() Operation {
	return Operation{
		Name: "net-nmconn",
		Description: "Unbind NetworkManager connection profiles from the factory's NIC, and remove NetworkManager's " +
			"per-machine state. In every keyfile in `" + keyfileDir + "` (with or without the `.nmconnection` extension: " +
			"NM loads both there) `mac-address=` and `seen-bssids=` lines are removed, and `cloned-mac-address=` when it " +
			"names a bound MAC; the profile itself stays (a static address for a known network survives; without a MAC it " +
			"applies to any device of its type). Unlike virt-sysprep, profiles are not deleted. `uuid=` stays: NM would " +
			"derive a missing one from the file name, the same on every clone. Removes " +
			"`" + strings.Join(nmStateFiles, "`, `") + "` (the secret key seeds stable-privacy IPv6 addresses and DHCP " +
			"client IDs). `NetworkManager.state` and `NetworkManager-intern.conf` hold no identity and stay.",
		Default: true,
		Run: func(c *Context) error {
			macs := c.factoryMACs()
			names, err := c.readDir(keyfileDir, false)
			if err != nil {
				return err
			}
			var errs []error
			for _, n := range names {
				if strings.HasPrefix(n, ".") { // NM's .nmmeta and hidden files
					continue
				}
				errs = append(errs, c.editFile(path.Join(keyfileDir, n), func(s string) (string, bool, error) {
					out, changed := dropLines(s, func(l string) bool {
						k, v, ok := keyValue(l)
						return ok && (k == "mac-address" || k == "seen-bssids" || k == "cloned-mac-address" && macs[normMAC(v)])
					})
					return out, changed, nil
				}))
			}
			errs = append(errs, c.removeGlobs(false, nmStateFiles...))
			return errors.Join(errs...)
		},
	}
}

// networkdStateOp: systemd-networkd keeps its persistent state in
// /var/lib/systemd/network (systemd-networkd(8); systemd 256 and later
// save the DHCP server's leases there, under dhcp-server-lease/, once
// systemd-networkd-persistent-storage.service runs). The DHCP client's own
// leases live in /run only.
func networkdStateOp() Operation {
	return removeOp("networkd-state", "Remove systemd-networkd's saved state (DHCP server leases handed out on the "+
		"factory's network)", true, true, "/var/lib/systemd/network/*")
}
