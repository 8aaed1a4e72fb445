package qemu

import (
	"context"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// img writes into an image tree as a boot or a provisioner would.
type img struct {
	t   *testing.T
	dir string
}

func (f img) p(name string) string { return filepath.Join(f.dir, name) }

func (f img) write(name, content string) {
	f.t.Helper()
	os.MkdirAll(filepath.Dir(f.p(name)), 0o755)
	if err := os.WriteFile(f.p(name), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f img) add(name, content string) {
	f.t.Helper()
	w, err := os.OpenFile(f.p(name), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = w.WriteString(content)
		w.Close()
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f img) edit(name, old, new string) {
	f.t.Helper()
	data, err := os.ReadFile(f.p(name))
	if err != nil || !strings.Contains(string(data), old) {
		f.t.Fatalf("%s holds %q (%v), not %q", name, data, err, old)
	}
	f.write(name, strings.Replace(string(data), old, new, 1))
}

func (f img) remove(name string) {
	f.t.Helper()
	if err := os.RemoveAll(f.p(name)); err != nil {
		f.t.Fatal(err)
	}
}

func (f img) link(name, target string) {
	f.t.Helper()
	os.MkdirAll(filepath.Dir(f.p(name)), 0o755)
	os.Remove(f.p(name))
	if err := os.Symlink(target, f.p(name)); err != nil {
		f.t.Fatal(err)
	}
}

// What the boot typically does to the network configuration of the image
// tree kept below: cloud-init renders its configuration for the factory's
// NIC, udev writes a persistent-net rule, a DHCP client rewrites
// resolv.conf, one file is edited, one removed.
func bootWrites(f img) {
	f.write("etc/netplan/50-cloud-init.yaml", "network: {ethernets: {enp0s3: {dhcp4: true}}}\n")
	f.write("etc/systemd/network/50-dhcp.network", "[Match]\nName=enp0s3\n")
	f.write("etc/udev/rules.d/70-persistent-net.rules", "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\"\n")
	f.write("etc/resolv.conf", "nameserver 10.0.2.3\n")
	f.remove("etc/network/interfaces.d/eth")
}

var kept = merge(systemd, networkd, networkdOn, map[string]string{
	"etc/netplan/01-netcfg.yaml":   "network: {version: 2}\n",
	"etc/network/interfaces":       "auto lo\niface lo inet loopback\n",
	"etc/network/interfaces.d/eth": "allow-hotplug ens3\niface ens3 inet dhcp\n",
	"etc/resolv.conf":              "nameserver 192.0.2.53\n",
	"etc/udev/rules.d/":            "",
	"var/lib/":                     "",
})

// TestUndoKeepsProvisionerChanges: with the mark (the guest's clock when SSH
// answered), what the boot changed in the network configuration goes back,
// what provisioners changed after it stays (edited, added, removed, a
// symlink in place of a file), the build's own files go whatever they did,
// and its lines are cut out of a file a provisioner edited. Without the
// mark everything goes back.
func TestUndoKeepsProvisionerChanges(t *testing.T) {
	const stub = "../run/systemd/resolve/stub-resolv.conf"
	ifupdownTree := merge(systemd, ifupdown, ifupdownOn)
	origIfaces := ifupdown["etc/network/interfaces"] + "\n" // the build ends its last line
	for _, tc := range []struct {
		name       string
		tree       map[string]string
		network    bool // ProvideNetwork, then ProvideDNS
		boot, prov func(img)
		mark       string            // "after-boot" (default), "none", "before-build" (the host's clock ahead of the guest's)
		kept       map[string]string // left as the provisioner made it (with all beneath): why
		also       []string          // the same, outside the places watched (not reported)
		want       map[string]string // content after Undo ("" = missing)
		err        string
	}{
		{name: "the boot's changes go back", tree: kept, boot: bootWrites},
		{name: "a provisioner's edits, additions and removals stay", tree: kept, boot: bootWrites,
			prov: func(f img) {
				f.write("etc/systemd/network/60-app.network", "[Match]\nName=en*\n[Network]\nDHCP=yes\n")
				f.write("etc/systemd/network/60-app.network.d/mtu.conf", "[Link]\nMTUBytes=1400\n")
				f.write("etc/netplan/60-app.yaml", "network: {version: 2, renderer: networkd}\n")
				f.write("etc/systemd/network/50-dhcp.network", "[Match]\nName=eth0\n") // the boot's edit first
				f.remove("etc/netplan/01-netcfg.yaml")
				f.link("etc/resolv.conf", stub) // the boot's DHCP client rewrote it first
			},
			kept: map[string]string{
				"/etc/systemd/network/60-app.network":   madeBy,
				"/etc/systemd/network/60-app.network.d": madeBy,
				"/etc/netplan/60-app.yaml":              madeBy,
				"/etc/systemd/network/50-dhcp.network":  changedBy,
				"/etc/netplan/01-netcfg.yaml":           removedBy,
				"/etc/resolv.conf":                      changedBy,
			},
			// The boot's own changes beside them still go.
			want: map[string]string{"/etc/netplan/50-cloud-init.yaml": "", "/etc/udev/rules.d/70-persistent-net.rules": "",
				"/etc/network/interfaces.d/eth": kept["etc/network/interfaces.d/eth"]}},
		{name: "without a mark everything goes back", tree: kept, boot: bootWrites, mark: "none",
			prov: func(f img) {
				f.write("etc/netplan/60-app.yaml", "network: {version: 2}\n")
				f.write("etc/systemd/network/50-dhcp.network", "[Match]\nName=eth0\n")
				f.remove("etc/netplan/01-netcfg.yaml")
				f.link("etc/resolv.conf", stub)
			}},
		{name: "ifupdown: the build's stanza cut out of interfaces a provisioner edited", tree: ifupdownTree, network: true,
			boot: func(f img) {
				f.write("etc/network/interfaces.d/50-cloud-init", "auto enp0s3\niface enp0s3 inet dhcp\n")
			},
			prov: func(f img) { f.add("etc/network/interfaces", "\nauto eth1\niface eth1 inet dhcp\n") },
			want: map[string]string{interfaces: origIfaces + "\nauto eth1\niface eth1 inet dhcp\n", "/etc/network/interfaces.d/50-cloud-init": ""}},
		{name: "ifupdown: interfaces rewritten whole by a provisioner", tree: ifupdownTree, network: true,
			prov: func(f img) { f.write("etc/network/interfaces", "auto lo\niface lo inet loopback\n") },
			kept: map[string]string{interfaces: changedBy}},
		{name: "ifupdown: the build's stanza no longer intact", tree: ifupdownTree, network: true,
			prov: func(f img) {
				f.edit("etc/network/interfaces", "iface imagefactory-build inet dhcp", "iface imagefactory-build inet manual")
			},
			err: `/etc/network/interfaces: a provisioner changed it during the build, and the lines the build added for its boot, "# Written by the imagefactory build`},
		{name: "ifupdown without a mark", tree: ifupdownTree, network: true, mark: "none",
			prov: func(f img) { f.add("etc/network/interfaces", "\nauto eth1\niface eth1 inet dhcp\n") }},
		{name: "networkd: the build's files go whatever a provisioner did", tree: merge(systemd, networkd), network: true,
			prov: func(f img) {
				f.add(networkdFile[1:], "# a provisioner's line\n")
				f.write("etc/systemd/network/60-app.network", "[Match]\nName=en*\n")
				// systemctl enable systemd-networkd: a link of its own.
				f.link("etc/systemd/system/multi-user.target.wants/systemd-networkd.service", "/usr/lib/systemd/system/systemd-networkd.service")
			},
			kept: map[string]string{"/etc/systemd/network/60-app.network": madeBy},
			also: []string{"/etc/systemd/system/multi-user.target.wants"},
			want: map[string]string{networkdFile: "", bootWants + "/systemd-networkd.service": "", "/usr/local": ""}},
		{name: "networkd without a mark: a provisioner's unit beside the build's link still stays", tree: merge(systemd, networkd), network: true, mark: "none",
			prov: func(f img) { f.write("usr/local/lib/systemd/system/app.service", "[Service]\n") },
			also: []string{"/usr/local/lib/systemd/system/app.service"},
			want: map[string]string{path.Dir(bootWants): ""}},
		{name: "NetworkManager: the build's keyfile goes, a provisioner's stays", tree: merge(systemd, networkManager, networkManagerOn, map[string]string{"var/lib/": ""}), network: true,
			boot: func(f img) { f.write("var/lib/NetworkManager/secret_key", "boot's\n") },
			prov: func(f img) {
				f.add(nmKeyfile[1:], "[proxy]\n")
				f.write("etc/NetworkManager/system-connections/app.nmconnection", "[connection]\nid=app\n")
			},
			kept: map[string]string{"/etc/NetworkManager/system-connections/app.nmconnection": madeBy},
			want: map[string]string{nmKeyfile: "", "/var/lib/NetworkManager": ""}},
		{name: "daemons' state goes back, a package's directory stays empty", tree: merge(kept, map[string]string{"var/lib/wicked/duid.xml": "image's\n"}),
			boot: func(f img) { f.write("var/lib/wicked/duid.xml", "boot's\n") },
			prov: func(f img) {
				// apt-get install network-manager: its directory, then its daemon's state.
				f.write("var/lib/NetworkManager/secret_key", "factory's identity\n")
				f.write("var/lib/NetworkManager/timestamps", "[timestamps]\n")
				f.write("var/lib/wicked/duid.xml", "later\n")
				f.write("var/lib/wicked/lease-enp0s3.xml", "lease\n")
			},
			kept: map[string]string{"/var/lib/NetworkManager": madeBy},
			// wicked's DUID and lease go with dhcp-client-state: a DUID
			// names the machine to DHCP servers.
			want: map[string]string{"/var/lib/NetworkManager/secret_key": "", "/var/lib/NetworkManager/timestamps": "",
				"/var/lib/wicked/duid.xml": ""}},
		{name: "the build's resolver cut, the image's lines back, a provisioner's kept", tree: merge(systemd, map[string]string{"etc/resolv.conf": "# no servers\n"}), network: true,
			prov: func(f img) { f.add("etc/resolv.conf", "search example.com\n") },
			want: map[string]string{resolvConf: "# no servers\nsearch example.com\n"}},
		{name: "the build's resolver replaced by systemd-resolved's stub", tree: merge(systemd, map[string]string{"etc/resolv.conf": ""}), network: true,
			prov: func(f img) { f.link("etc/resolv.conf", stub) },
			kept: map[string]string{resolvConf: changedBy}},
		{name: "the host's clock ahead of the guest's: the build's writes are not a provisioner's",
			tree: merge(systemd, networkd, map[string]string{"etc/resolv.conf": ""}), network: true, mark: "before-build"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mark time.Time
			if tc.mark == "before-build" {
				mark = time.Now()
				time.Sleep(20 * time.Millisecond)
			}
			dir := t.TempDir()
			f := img{t, dir}
			makeTree(t, dir, tc.tree)
			ageTree(t, dir)
			before := fixture.DirManifest(t, dir)
			root, g := inspectDir(t, dir, "root", "ssh-ed25519 AAAA build")
			if tc.network {
				if _, err := g.ProvideNetwork(root, testMAC); err != nil {
					t.Fatal(err)
				}
				if _, err := g.ProvideDNS(root); err != nil {
					t.Fatal(err)
				}
			}
			if tc.boot != nil {
				tc.boot(f)
			}
			if tc.mark == "" {
				// Past the filesystem's timestamp granularity on both sides:
				// the kernel stamps ctimes from a clock that lags by a tick.
				time.Sleep(20 * time.Millisecond)
				mark = time.Now()
				time.Sleep(20 * time.Millisecond)
			}
			if tc.prov != nil {
				tc.prov(f)
			}
			provisioned := fixture.DirManifest(t, dir)

			rep, err := g.Undo(context.Background(), root, mark)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Undo = %v, want an error with %q", err, tc.err)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			after := fixture.DirManifest(t, dir)

			// Expected: the tree as it was before, but for what the
			// provisioner left (as it left it) and the paths of want.
			want := maps.Clone(before)
			loose := map[string]bool{} // directories whose mtime the provisioner moved
			for _, p := range append(slices.Collect(maps.Keys(tc.kept)), tc.also...) {
				for q := range want {
					if q == p || strings.HasPrefix(q, p+"/") {
						delete(want, q)
					}
				}
				for q, line := range provisioned {
					if q == p || strings.HasPrefix(q, p+"/") {
						want[q] = line
					}
				}
				// and the directories made for it
				loose[p] = true
				for q := path.Dir(p); ; q = path.Dir(q) {
					loose[q] = true
					if _, ok := before[q]; ok || q == "/" {
						break
					}
					want[q] = provisioned[q]
				}
			}
			for p, content := range tc.want {
				delete(want, p)
				delete(after, p)
				loose[path.Dir(p)] = true
				got, err := os.ReadFile(f.p(p))
				if content == "" && err == nil || content != "" && string(got) != content {
					t.Errorf("%s after Undo = %q (%v), want %q", p, got, err, content)
				}
			}
			mtime := regexp.MustCompile(` mtime=\S+`)
			for p := range loose {
				for _, m := range []map[string]string{want, after} {
					if line, ok := m[p]; ok && strings.HasPrefix(line, "mode=40") { // a directory
						m[p] = mtime.ReplaceAllString(line, "")
					}
				}
			}
			if diff := fixture.ManifestDiff(want, after, 30); len(diff) > 0 {
				t.Errorf("after Undo the tree differs from what is expected:\n%s\nreport: %+v", strings.Join(diff, "\n"), rep.Changes)
			}

			got := map[string]string{}
			for _, c := range rep.Changes {
				if c.Action == Kept {
					got[c.Path] = c.Op
				}
			}
			if !maps.Equal(got, orNone(tc.kept)) {
				t.Errorf("reported as kept: %v, want %v\nreport: %+v", got, tc.kept, rep.Changes)
			}
			for _, c := range rep.Changes {
				t.Logf("%s %s (%s)", c.Action, c.Path, c.Op)
			}

			// A second Undo changes nothing more.
			rep, err = g.Undo(context.Background(), root, mark)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range rep.Changes {
				if c.Action != Kept {
					t.Errorf("second Undo: %+v", c)
				}
			}
		})
	}
}

func orNone(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
