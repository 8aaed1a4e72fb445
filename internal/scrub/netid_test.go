package scrub

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestNetworkIdentityScrubbed: after the default operations, no file of an
// image with NetworkManager, networkd, netplan, dhclient, dhcpcd and wicked
// state carries the factory's MAC or lease; each file is removed, edited or
// kept as stated, by the operation stated, and the configuration that is
// not a binding survives.
func TestNetworkIdentityScrubbed(t *testing.T) {
	dir, root := newImage(t, fixture.NetIDFiles, nil)
	// NM ignores a keyfile that is not 0600 and owned by root
	// (nm-settings-keyfile(5)): an edit must keep that.
	keyfile := filepath.Join(dir, "/etc/NetworkManager/system-connections/office-static")
	if err := os.Chmod(keyfile, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), root, opsNamed(t, "defaults"), Options{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	type outcome struct {
		op     string
		action Action // "" = untouched
		keep   []string
	}
	const nm, sc, sn = "/etc/NetworkManager/system-connections/", "/etc/sysconfig/network-scripts/", "/etc/systemd/network/"
	want := map[string]outcome{
		nm + "Wired connection 1.nmconnection": {op: "net-nmconn", action: Changed, keep: []string{"cloned-mac-address=stable", "[ipv4]\nmethod=auto"}},
		nm + "office-static":                   {op: "net-nmconn", action: Changed, keep: []string{"address1=10.20.0.5/24,10.20.0.1", "uuid=0b1c6d3e"}},
		nm + "cloud-init-eth0.nmconnection":    {op: "net-nmconn", action: Changed, keep: []string{"id=cloud-init eth0"}},
		"/var/lib/NetworkManager/internal-89321b95-d3b5-307d-a9f2-ff441c3f61ba-eth0.lease":  {op: "dhcp-client-state", action: Removed},
		"/var/lib/NetworkManager/dhclient6-89321b95-d3b5-307d-a9f2-ff441c3f61ba-eth0.lease": {op: "dhcp-client-state", action: Removed},
		"/var/lib/NetworkManager/dhclient-eth0.conf":                                        {op: "dhcp-client-state", action: Removed},
		"/var/lib/NetworkManager/secret_key":                                                {op: "net-nmconn", action: Removed},
		"/var/lib/NetworkManager/seen-bssids":                                               {op: "net-nmconn", action: Removed},
		"/var/lib/NetworkManager/timestamps":                                                {op: "net-nmconn", action: Removed},
		"/var/lib/NetworkManager/no-auto-default.state":                                     {op: "net-nmconn", action: Removed},
		"/var/lib/NetworkManager/NetworkManager.state":                                      {keep: []string{"NetworkingEnabled=true"}},
		sc + "ifcfg-eth0":                                 {op: "net-hwaddr", action: Changed, keep: []string{"BOOTPROTO=dhcp", "UUID=5fb06bd0"}},
		sc + "ifcfg-eth1":                                 {keep: []string{"MACADDR=02:00:00:00:00:01", "IPADDR=10.30.0.5"}},
		sn + "10-eth0.network":                            {op: "net-hwaddr", action: Changed, keep: []string{"[Match]\nType=ether\n", "DHCP=yes"}},
		sn + "20-lan.network":                             {op: "net-hwaddr", action: Changed, keep: []string{"[Match]\nName=ens4\n\n", "Address=10.0.0.5/24"}},
		sn + "70-lan0.link":                               {op: "net-hwaddr", action: Removed},
		sn + "25-br1.netdev":                              {op: "net-hwaddr", action: Changed, keep: []string{"[NetDev]\nName=br1\nKind=bridge\n"}},
		sn + "80-br0.link":                                {op: "net-hwaddr", action: Changed, keep: []string{"OriginalName=br0", "[Link]\n"}},
		sn + "10-netplan-ens3.network":                    {op: "net-hwaddr", action: Changed, keep: []string{"[Match]\nName=ens3\n", "DHCP=ipv4"}},
		sn + "10-netplan-ens3.link":                       {op: "net-hwaddr", action: Removed},
		"/var/lib/systemd/network/dhcp-server-lease/ens3": {op: "networkd-state", action: Removed},
		"/etc/netplan/50-cloud-init.yaml": {op: "net-hwaddr", action: Changed,
			keep: []string{"# This file is generated from information provided by the datasource.", "    ens3:\n      dhcp4: true\n"}},
		"/etc/netplan/60-bridge.yaml":               {op: "net-hwaddr", action: Changed, keep: []string{"interfaces: [ens3]", "dhcp4: true"}},
		"/var/lib/dhcp/dhclient.ens3.leases":        {op: "dhcp-client-state", action: Removed},
		"/var/lib/dhclient/dhclient6.leases":        {op: "dhcp-client-state", action: Removed},
		"/var/lib/dhcpcd/duid":                      {op: "dhcp-client-state", action: Removed},
		"/var/lib/dhcpcd/ens3.lease":                {op: "dhcp-client-state", action: Removed},
		"/etc/dhcpcd.duid":                          {op: "dhcp-client-state", action: Removed},
		"/etc/dhcpcd.secret":                        {op: "dhcp-client-state", action: Removed},
		"/var/lib/wicked/duid.xml":                  {op: "dhcp-client-state", action: Removed},
		"/var/lib/wicked/lease-eth0-dhcp-ipv4.xml":  {op: "dhcp-client-state", action: Removed},
		"/etc/udev/rules.d/70-persistent-net.rules": {op: "udev-persistent-net", action: Removed},
	}
	for p := range fixture.NetIDFiles {
		if _, ok := want[p]; !ok {
			t.Errorf("fixture file %s has no expected outcome", p)
		}
	}
	reported := map[string][]Change{}
	for _, c := range rep.Changes {
		reported[c.Path] = append(reported[c.Path], c)
	}
	for p, w := range want {
		t.Run(strings.TrimPrefix(p, "/"), func(t *testing.T) {
			got, err := os.ReadFile(filepath.Join(dir, p))
			switch {
			case w.action == Removed && err == nil:
				t.Errorf("still there:\n%s", got)
			case w.action != Removed && err != nil:
				t.Errorf("gone: %v", err)
			}
			for _, k := range w.keep {
				if !strings.Contains(string(got), k) {
					t.Errorf("lost %q; now:\n%s", k, got)
				}
			}
			var changes []Change
			for _, c := range reported[p] {
				changes = append(changes, c)
			}
			switch {
			case w.action == "" && len(changes) > 0:
				t.Errorf("reported %+v, want untouched", changes)
			case w.action != "" && (len(changes) != 1 || changes[0].Op != w.op || changes[0].Action != w.action):
				t.Errorf("reported %+v, want one %s by %s", changes, w.action, w.op)
			}
		})
	}
	if fi, err := os.Stat(keyfile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("edited keyfile: %v, %v; want mode 0600", fi, err)
	}
	// No file left anywhere names the factory's NIC or lease.
	assertNoneNames(t, dir, "/", append([]string{fixture.FactoryLease}, fixture.FactoryMACForms...)...)
	// A second scrub finds nothing more to do.
	again, err := Run(context.Background(), root, opsNamed(t, "net-hwaddr,net-nmconn,networkd-state,dhcp-client-state,udev-persistent-net"), Options{})
	if err != nil || len(again.Changes) != 0 {
		t.Errorf("second run: %v, %+v; want no change", err, again.Changes)
	}
}

// assertNoneNames fails for every regular file beneath dir/sub that holds
// one of words (case-insensitively, as a whole word).
func assertNoneNames(t *testing.T, dir, sub string, words ...string) {
	t.Helper()
	re := fixture.WordsRE(words...)
	filepath.WalkDir(filepath.Join(dir, sub), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err == nil && re.Match(data) {
			t.Errorf("%s still names %q:\n%s", strings.TrimPrefix(p, dir), re.FindSubmatch(data)[2], data)
		}
		return nil
	})
}

// TestHostnameEverywhere: after the hostname operation alone, with and
// without the hostname option, no file under /etc names the template's
// short name or FQDN, and tmpl-build-010 keeps its name.
func TestHostnameEverywhere(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		content map[string]string
	}{
		{name: "default localhost", content: map[string]string{
			"/etc/hostname": "localhost\n",
			"/etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tlocalhost\n\n# The following lines are desirable for IPv6 capable hosts\n" +
				"::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n10.0.0.10\ttmpl-build-010.example tmpl-build-010\n",
			"/etc/HOSTNAME":                             "localhost\n",
			"/etc/mailname":                             "localhost\n",
			"/etc/sysconfig/network":                    "NETWORKING=yes\nHOSTNAME=localhost\n",
			"/etc/machine-info":                         "CHASSIS=vm\n",
			"/etc/sysconfig/network-scripts/ifcfg-ens3": "DEVICE=ens3\nBOOTPROTO=dhcp\nONBOOT=yes\n",
			"/etc/postfix/main.cf": "# See /usr/share/postfix/main.cf.dist\nmyhostname = localhost\nalias_maps = hash:/etc/aliases\n" +
				"mydestination = $myhostname, localhost, localhost.localdomain, localhost\nrelayhost = tmpl-build-010.example\n",
			"/etc/cloud/cloud.cfg.d/99-factory.cfg": "preserve_hostname: false\nmanage_etc_hosts: true\n",
		}},
		{name: "hostname option", opts: Options{Hostname: "web1.example.org"}, content: map[string]string{
			"/etc/hostname": "web1.example.org\n",
			"/etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.org\tweb1\n\n# The following lines are desirable for IPv6 capable hosts\n" +
				"::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n10.0.0.10\ttmpl-build-010.example tmpl-build-010\n",
			"/etc/HOSTNAME":                             "web1.example.org\n",
			"/etc/mailname":                             "web1.example.org\n",
			"/etc/sysconfig/network":                    "NETWORKING=yes\nHOSTNAME=web1.example.org\n",
			"/etc/machine-info":                         "PRETTY_HOSTNAME=web1\nCHASSIS=vm\n",
			"/etc/sysconfig/network-scripts/ifcfg-ens3": "DEVICE=ens3\nBOOTPROTO=dhcp\nDHCP_HOSTNAME=web1\nHOSTNAME=\"web1.example.org\"\nONBOOT=yes\n",
			"/etc/postfix/main.cf": "# See /usr/share/postfix/main.cf.dist\nmyhostname = web1.example.org\nalias_maps = hash:/etc/aliases\n" +
				"mydestination = $myhostname, web1, localhost.localdomain, localhost\nrelayhost = tmpl-build-010.example\n",
			"/etc/cloud/cloud.cfg.d/99-factory.cfg": "preserve_hostname: false\nhostname: web1\nfqdn: web1.example.org\nmanage_etc_hosts: true\n",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, root := newImage(t, fixture.HostnameFiles, nil)
			before := snapshot(t, dir)
			rep, err := Run(context.Background(), root, opsNamed(t, "hostname"), tt.opts)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			for p, want := range tt.content {
				if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(got) != want {
					t.Errorf("%s = %q, %v\nwant %q", p, got, err, want)
				}
			}
			assertNoneNames(t, dir, "/etc", fixture.TemplateHost, fixture.TemplateFQDN)
			_, changed, _ := diff(before, snapshot(t, dir))
			var reported []string
			for _, c := range rep.Changes {
				if c.Op != "hostname" || c.Action != Changed {
					t.Errorf("unexpected change %+v", c)
				}
				reported = append(reported, c.Path)
			}
			if strings.Join(sorted(reported), " ") != strings.Join(changed, " ") {
				t.Errorf("reported %q, changed %q", sorted(reported), changed)
			}
		})
	}
}

// TestHostnameEtcHosts is the user's report: the hostname operation set
// /etc/hostname but left "127.0.1.1 tmpl-build-01.example tmpl-build-01"
// in /etc/hosts, so every clone resolved to the template's name.
func TestHostnameEtcHosts(t *testing.T) {
	tests := []struct{ name, hostname, want string }{
		{"the report", "tmpl-build-01\n", "127.0.0.1 localhost\n127.0.1.1\tlocalhost\n"},
		// /etc/hostname changed by hand, /etc/hosts forgotten: the
		// 127.0.1.1 line still names the template.
		{"hostname already localhost", "localhost\n", "127.0.0.1 localhost\n127.0.1.1\tlocalhost\n"},
	}
	// Scrubbing a scrubbed image changes nothing.
	t.Run("idempotent", func(t *testing.T) {
		_, root := newImage(t, fixture.HostnameFiles, nil)
		opts := Options{Hostname: "web1.example.org"}
		if _, err := Run(context.Background(), root, opsNamed(t, "hostname"), opts); err != nil {
			t.Fatal(err)
		}
		rep, err := Run(context.Background(), root, opsNamed(t, "hostname"), opts)
		if err != nil || len(rep.Changes) != 0 {
			t.Errorf("second run: %v, %+v; want no change", err, rep.Changes)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, root := newImage(t, map[string]string{
				"/etc/hostname": tt.hostname,
				"/etc/hosts":    "127.0.0.1 localhost\n127.0.1.1 tmpl-build-01.example tmpl-build-01\n",
			}, nil)
			if _, err := Run(context.Background(), root, opsNamed(t, "hostname"), Options{}); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "/etc/hosts")); string(got) != tt.want {
				t.Errorf("/etc/hosts = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReplaceNames(t *testing.T) {
	repl := map[string]string{"tmpl-build-01": "web1", "tmpl-build-01.example": "web1.example.org"}
	for in, want := range map[string]string{
		"tmpl-build-01":                     "web1",
		"TMPL-BUILD-01.example.":            "web1.example.org.",
		"root@tmpl-build-01 x":              "root@web1 x",
		"tmpl-build-010 tmpl-build-01_x":    "tmpl-build-010 tmpl-build-01_x",
		"a.tmpl-build-01 tmpl-build-01.org": "a.tmpl-build-01 tmpl-build-01.org",
		"$myhostname, tmpl-build-01,x":      "$myhostname, web1,x",
	} {
		if got, _ := replaceNames(in, repl); got != want {
			t.Errorf("replaceNames(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNormMAC(t *testing.T) {
	for in, want := range map[string]string{
		"52:54:00:AB:CD:EF": "52:54:00:ab:cd:ef", `"52-54-00-ab-cd-ef"`: "52:54:00:ab:cd:ef",
		"82;84;0;171;205;239;": "52:54:00:ab:cd:ef", "stable": "", "random": "", "52:54:00:ab:cd": "",
	} {
		if got := normMAC(in); got != want {
			t.Errorf("normMAC(%q) = %q, want %q", in, got, want)
		}
	}
}
