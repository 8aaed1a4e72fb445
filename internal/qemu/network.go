package qemu

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// The network managers the factory boot can configure, by the names their
// users know them by.
const (
	NetworkNetworkd       = "systemd-networkd"
	NetworkNetworkManager = "NetworkManager"
	NetworkIfupdown       = "ifupdown"
)

// What the build writes for its boot; each is taken out after it.
const (
	networkdFile = "/etc/systemd/network/00-imagefactory-build.network" // 00-: networkd uses the first matching file
	nmKeyfile    = "/etc/NetworkManager/system-connections/imagefactory-build.nmconnection"
	interfaces   = "/etc/network/interfaces"
	buildIface   = "imagefactory-build" // ifupdown's logical interface
	writtenBy    = "Written by the imagefactory build for its boot under QEMU; removed after it."
)

// NetworkPlan is how the factory boot gets its network.
type NetworkPlan struct {
	Manager string   // NetworkNetworkd, NetworkNetworkManager, NetworkIfupdown, or "" (the image's own configuration)
	MAC     string   // the factory NIC's
	Match   string   // how the configuration finds the NIC: "MAC 52:54:00:..." or an interface name
	Files   []string // written for the boot
	Enabled string   // the service enabled for this boot only, or ""
	Note    string   // without a Manager: why
}

// String is the line the build shows.
func (p *NetworkPlan) String() string {
	if p.Manager == "" {
		note := p.Note
		if note == "" {
			note = "the image has neither systemd-networkd, NetworkManager nor ifupdown"
		}
		return "Network for the factory boot: " + note + "; the boot relies on the image's own configuration"
	}
	enabled := ""
	if p.Enabled != "" {
		enabled = " (" + p.Enabled + " enabled for this boot only)"
	}
	return fmt.Sprintf("Network for the factory boot: %s%s, DHCP on the NIC matched by %s (%s); removed after the boot",
		p.Manager, enabled, p.Match, strings.Join(p.Files, ", "))
}

// NewMAC returns a random MAC address for the build's NIC, in QEMU's
// locally administered 52:54:00 range.
func NewMAC() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2]), nil
}

// ProvideNetwork gives the boot network on the NIC with address mac,
// offline, through a network manager the image has: one it enables
// already, else one that is installed (enabled for this boot only), in
// the order systemd-networkd, NetworkManager, ifupdown. The configuration
// matches the factory NIC alone (by MAC; busybox's and other non-Debian
// ifupdowns by the name eth0), so the image's own configuration, which
// names other NICs, never manages it too. Undo takes everything out.
// Without any of them the plan's Manager is "" and nothing is written.
func (g *GuestState) ProvideNetwork(root *inroot.Root, mac string) (*NetworkPlan, error) {
	if !macAddress.MatchString(mac) {
		return nil, fmt.Errorf("MAC address %q is not six colon-separated hex bytes", mac)
	}
	g.MAC = mac
	mgrs, err := findNetworkManagers(root)
	if err != nil {
		return nil, fmt.Errorf("looking for the image's network manager: %w", err)
	}
	var m *netManager
	for _, c := range mgrs {
		if c.enabled {
			m = c
			break
		}
	}
	for _, c := range mgrs {
		if m == nil && c.present {
			m = c
		}
	}
	plan := &NetworkPlan{MAC: mac}
	if m == nil {
		return plan, nil
	}
	plan.Manager = m.name
	if err := m.write(g, root, plan); err != nil {
		return nil, fmt.Errorf("network for the factory boot (%s): %w", m.name, err)
	}
	if plan.Manager != "" && !m.enabled {
		if err := g.enableForBoot(root, m.service); err != nil {
			return nil, fmt.Errorf("enabling %s for the factory boot: %w", m.name, err)
		}
		plan.Enabled = path.Base(m.service.link)
	}
	return plan, nil
}

// netManager is one network manager as the image has it.
type netManager struct {
	name             string
	present, enabled bool
	service          bootService // how the boot starts it
	write            func(*GuestState, *inroot.Root, *NetworkPlan) error
}

// bootService is a symlink that starts a service on boot: for systemd a
// wants link of multi-user.target to its unit file, for OpenRC a runlevel
// link to its script.
type bootService struct {
	link, target string
}

// findNetworkManagers describes systemd-networkd, NetworkManager and
// ifupdown in the image, in order of preference: whether each is
// installed (and not masked) and enabled.
func findNetworkManagers(root *inroot.Root) ([]*netManager, error) {
	systemd, err := anyExists(root, "/usr/lib/systemd/systemd", "/lib/systemd/systemd")
	if err != nil {
		return nil, err
	}
	var out []*netManager
	if systemd {
		for _, m := range []struct {
			name, unit string
			binaries   []string
			write      func(*GuestState, *inroot.Root, *NetworkPlan) error
		}{
			{NetworkNetworkd, "systemd-networkd.service", []string{"/usr/lib/systemd/systemd-networkd", "/lib/systemd/systemd-networkd"}, (*GuestState).writeNetworkd},
			{NetworkNetworkManager, "NetworkManager.service", []string{"/usr/sbin/NetworkManager", "/sbin/NetworkManager"}, (*GuestState).writeNetworkManager},
		} {
			u, err := findUnit(root, m.unit)
			if err != nil {
				return nil, err
			}
			bin, err := anyExists(root, m.binaries...)
			if err != nil {
				return nil, err
			}
			out = append(out, &netManager{name: m.name, present: bin && u.file != "" && !u.masked, enabled: u.enabled && !u.masked,
				service: u.service(), write: m.write})
		}
	}
	ifup, err := anyExists(root, "/usr/sbin/ifup", "/sbin/ifup")
	if err != nil || !ifup {
		return out, err
	}
	m := &netManager{name: NetworkIfupdown, present: true, write: (*GuestState).writeIfupdown}
	openrc, err := anyExists(root, "/sbin/openrc", "/usr/sbin/openrc")
	if err != nil {
		return nil, err
	}
	switch {
	case systemd:
		u, err := findUnit(root, "networking.service")
		if err != nil {
			return nil, err
		}
		m.present = u.file != "" && !u.masked
		m.enabled, m.service = u.enabled && !u.masked, u.service()
	case openrc:
		links, err := globIn(root, "/etc/runlevels/*")
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			if ok, _ := root.Exists(path.Join(l, "networking")); ok {
				m.enabled = true
			}
		}
		m.present, _ = root.Exists("/etc/init.d/networking")
		m.service = bootService{link: "/etc/runlevels/boot/networking", target: "/etc/init.d/networking"}
	default: // another init starts it its own way
		m.enabled = true
	}
	return append(out, m), nil
}

// unitFile is where a systemd unit is in the image and its state.
type unitFile struct {
	name    string
	file    string // the unit's file, as a wants link names it, or ""
	masked  bool   // linked to /dev/null in a unit directory
	enabled bool   // some .wants or .requires directory links it
}

// bootWants is where the build links a unit it enables for the boot: a
// unit directory of systemd's search path (systemd.unit(5); "systemd-analyze
// unit-paths" lists it on Debian 12) that systemctl enable and disable
// never write to. A provisioner's "systemctl enable" of the same unit
// then makes its own link in /etc, which stays when the build's goes; in
// /etc/systemd/system the two would be one link, the build's, and the
// provisioner's intent would go with it.
const bootWants = "/usr/local/lib/systemd/system/multi-user.target.wants"

func (u unitFile) service() bootService {
	return bootService{link: path.Join(bootWants, u.name), target: u.file}
}

// unitDirs are systemd's unit directories that an offline image holds, in
// systemd's order of precedence.
var unitDirs = []string{"/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// findUnit looks for unit in the image's unit directories (systemd.unit(5)).
func findUnit(root *inroot.Root, unit string) (unitFile, error) {
	u := unitFile{name: unit}
	for _, d := range unitDirs {
		p := path.Join(d, unit)
		fi, err := root.Lstat(p)
		if isMissing(err) {
			continue
		}
		if err != nil {
			return u, err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if t, _ := root.Readlink(p); t == "/dev/null" {
				u.masked = true
			}
		}
		if u.file == "" {
			u.file = p
		}
	}
	// Enabled: linked from a .wants or .requires directory of any unit
	// directory (the unit file itself may be in another).
	for _, d := range unitDirs {
		for _, pat := range []string{"*.wants", "*.requires"} {
			ws, err := globIn(root, path.Join(d, pat))
			if err != nil {
				return u, err
			}
			for _, w := range ws {
				if ok, _ := root.Exists(path.Join(w, unit)); ok {
					u.enabled = true
				}
			}
		}
	}
	return u, nil
}

// anyExists: one of names exists in the image (a final symlink counts).
func anyExists(root *inroot.Root, names ...string) (bool, error) {
	for _, n := range names {
		ok, err := root.Exists(n)
		if err != nil && !isMissing(err) {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// writeFor writes a file the boot needs, recording first what was there.
// added is "" when the whole file is the build's: it goes after the boot
// whatever a provisioner did to it. Else added is what the build appended
// to a file of the image's, which a provisioner may edit: their edits are
// kept, and added cut out (traces: what only added holds).
func (g *GuestState) writeFor(root *inroot.Root, plan *NetworkPlan, name string, data []byte, perm fs.FileMode, added string, traces ...string) error {
	if err := g.snap.track(root, name); err != nil {
		return err
	}
	if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return err
	}
	if err := root.WriteFile(name, data, perm); err != nil {
		return err
	}
	g.snap.stamp(root, name)
	if added == "" {
		g.snap.own[name] = true
	} else {
		g.snap.blocks[name] = &buildBlock{text: added, traces: traces}
	}
	plan.Files = append(plan.Files, name)
	return nil
}

// writeNetworkd: a .network file matching the NIC's MAC, DHCPv4 only.
// systemd.network(5): the first file in lexical order that matches a
// link configures it, so 00- wins over the image's own and cloud-init's.
func (g *GuestState) writeNetworkd(root *inroot.Root, plan *NetworkPlan) error {
	plan.Match = "MAC " + plan.MAC
	conf := "# " + writtenBy + "\n[Match]\nMACAddress=" + plan.MAC +
		"\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
	return g.writeFor(root, plan, networkdFile, []byte(conf), 0o644, "")
}

// writeNetworkManager: a keyfile (nm-settings-keyfile(5); NetworkManager
// ignores one that is not root's and 0600) bound to the NIC's MAC, with a
// priority above the image's own profiles.
func (g *GuestState) writeNetworkManager(root *inroot.Root, plan *NetworkPlan) error {
	plan.Match = "MAC " + plan.MAC
	u := make([]byte, 16)
	if _, err := rand.Read(u); err != nil {
		return err
	}
	u[6], u[8] = u[6]&0x0f|0x40, u[8]&0x3f|0x80 // version 4, RFC 4122 variant
	conf := fmt.Sprintf("# %s\n[connection]\nid=imagefactory-build\nuuid=%x-%x-%x-%x-%x\ntype=ethernet\nautoconnect=true\nautoconnect-priority=999\n\n"+
		"[ethernet]\nmac-address=%s\n\n[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=ignore\n",
		writtenBy, u[0:4], u[4:6], u[6:8], u[8:10], u[10:], strings.ToUpper(plan.MAC))
	return g.writeFor(root, plan, nmKeyfile, []byte(conf), 0o600, "")
}

// writeIfupdown appends a stanza to /etc/network/interfaces. Debian's
// ifupdown matches the NIC by MAC and maps it to a logical interface of
// the build's (interfaces(5), "PATTERN MATCHING INTERFACES": a pattern
// works in "auto" lines, which networking.service brings up, not in
// "allow-hotplug" ones); busybox's and other ifupdowns know no patterns,
// so they get the kernel's name eth0, unless the image defines eth0
// itself (a second stanza would be an error).
func (g *GuestState) writeIfupdown(root *inroot.Root, plan *NetworkPlan) error {
	old, err := root.ReadFile(interfaces)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	debian, err := root.Exists("/var/lib/dpkg/info/ifupdown.list")
	if err != nil {
		return err
	}
	var stanza string
	if debian {
		plan.Match = "MAC " + plan.MAC
		stanza = fmt.Sprintf("auto mac/%s/=%s\niface %s inet dhcp\n", plan.MAC, buildIface, buildIface)
		if !g.hasDHCPClient(root) {
			g.Warnings = append(g.Warnings, "ifupdown finds no DHCP client in the image (isc-dhcp-client, dhcpcd, udhcpc): the factory boot may get no address")
		}
	} else {
		plan.Match = "the name eth0"
		for _, line := range strings.Split(string(old), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "iface" && f[1] == "eth0" {
				plan.Manager, plan.Match = "", ""
				plan.Note = "the image's " + interfaces + " configures eth0 itself (its ifupdown matches no MAC)"
				return nil
			}
		}
		stanza = "auto eth0\niface eth0 inet dhcp\n"
	}
	added := "\n# " + writtenBy + "\n" + stanza
	return g.writeFor(root, plan, interfaces, append(old, added...), 0o644, added, "# "+writtenBy, buildIface)
}

// hasDHCPClient: one of the clients Debian's ifupdown runs for "inet dhcp".
func (g *GuestState) hasDHCPClient(root *inroot.Root) bool {
	ok, _ := anyExists(root, "/sbin/dhclient", "/usr/sbin/dhclient", "/sbin/dhcpcd", "/usr/sbin/dhcpcd",
		"/sbin/udhcpc", "/usr/sbin/udhcpc", "/sbin/pump", "/usr/sbin/pump")
	return ok
}

// enableForBoot links s's service for this boot; Undo takes the link out.
func (g *GuestState) enableForBoot(root *inroot.Root, s bootService) error {
	if s.target == "" {
		return fmt.Errorf("the image has no service file to enable")
	}
	if err := g.snap.track(root, s.link); err != nil {
		return err
	}
	if err := root.MkdirAll(path.Dir(s.link), 0o755); err != nil {
		return err
	}
	if err := root.RemoveAll(s.link); err != nil {
		return err
	}
	if err := root.Symlink(s.target, s.link); err != nil {
		return err
	}
	g.snap.stamp(root, s.link)
	g.snap.own[s.link] = true
	return nil
}
