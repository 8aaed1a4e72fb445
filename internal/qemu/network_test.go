package qemu

import (
	"context"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// makeTree lays out an image tree: a key ending in "/" is a directory, a
// value starting with "-> " a symlink to the rest, anything else a file
// (0644) holding the value. Entries are made in name order.
func makeTree(t *testing.T, dir string, spec map[string]string) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(spec)) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		v := spec[name]
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(v, "-> "):
			err = os.Symlink(strings.TrimPrefix(v, "-> "), p)
		default:
			err = os.WriteFile(p, []byte(v), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

// Image layouts, the pieces of the field's images that decide how the
// factory boot gets its network.
var (
	usrMerged  = map[string]string{"lib": "-> usr/lib", "sbin": "-> usr/sbin", "bin": "-> usr/bin", "usr/bin/": ""}
	systemd    = merge(usrMerged, map[string]string{"usr/lib/systemd/systemd": "ELF", "etc/systemd/system/": ""})
	networkd   = map[string]string{"usr/lib/systemd/systemd-networkd": "ELF", "usr/lib/systemd/system/systemd-networkd.service": "[Unit]\n"}
	networkdOn = map[string]string{
		"etc/systemd/system/multi-user.target.wants/systemd-networkd.service": "-> /lib/systemd/system/systemd-networkd.service",
		"etc/systemd/network/50-dhcp.network":                                 "[Match]\nName=en*\n[Network]\nDHCP=yes\n",
	}
	networkManager   = map[string]string{"usr/sbin/NetworkManager": "ELF", "usr/lib/systemd/system/NetworkManager.service": "[Unit]\n"}
	networkManagerOn = map[string]string{
		"etc/systemd/system/multi-user.target.wants/NetworkManager.service": "-> /usr/lib/systemd/system/NetworkManager.service",
		"etc/NetworkManager/system-connections/ens3.nmconnection":           "[connection]\nid=ens3\ninterface-name=ens3\n",
	}
	ifupdown = map[string]string{
		"usr/sbin/ifup": "ELF", "usr/sbin/dhclient": "ELF", "var/lib/dpkg/info/ifupdown.list": "/sbin/ifup\n",
		"usr/lib/systemd/system/networking.service": "[Unit]\n",
		"etc/network/interfaces":                    "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nallow-hotplug ens3\niface ens3 inet dhcp", // no final newline
	}
	ifupdownOn = map[string]string{"etc/systemd/system/multi-user.target.wants/networking.service": "-> /lib/systemd/system/networking.service"}
	alpine     = map[string]string{
		"sbin/openrc": "ELF", "bin/busybox": "ELF", "sbin/ifup": "-> /bin/busybox", "etc/init.d/networking": "#!/sbin/openrc-run\n",
		"etc/network/interfaces": "auto lo\niface lo inet loopback\n",
	}
	alpineOn = map[string]string{"etc/runlevels/boot/networking": "-> /etc/init.d/networking"}
)

const testMAC = "52:54:00:12:34:56"

// TestProvideNetwork: per image layout, the network manager chosen, what
// is written for the boot (and enabled for it only), and after Undo the
// tree exactly as it was, times included.
func TestProvideNetwork(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tree    map[string]string
		manager string
		enabled string            // the service enabled for the boot
		files   map[string]string // written for the boot: a regexp of the content
		links   map[string]string // made for the boot: target
		mode    os.FileMode       // of the first file (0 = 0644)
	}{
		{"bare Debian: networkd installed, nothing enabled", merge(systemd, networkd), NetworkNetworkd, "systemd-networkd.service",
			map[string]string{networkdFile: `(?s)\[Match\]\nMACAddress=52:54:00:12:34:56\n.*\[Network\]\nDHCP=ipv4\n`},
			map[string]string{bootWants + "/systemd-networkd.service": "/usr/lib/systemd/system/systemd-networkd.service"}, 0},
		{"Ubuntu: networkd enabled, netplan", merge(systemd, networkd, networkdOn, map[string]string{"etc/netplan/50-cloud-init.yaml": "network: {}\n"}),
			NetworkNetworkd, "", map[string]string{networkdFile: `MACAddress=52:54:00:12:34:56\n`}, nil, 0},
		{"Debian with ifupdown naming ens3, networkd installed but off", merge(systemd, networkd, ifupdown, ifupdownOn), NetworkIfupdown, "",
			map[string]string{interfaces: `(?s)^source .*iface ens3 inet dhcp\n\n# Written by the imagefactory build.*\nauto mac/52:54:00:12:34:56/=imagefactory-build\niface imagefactory-build inet dhcp\n$`}, nil, 0},
		{"ifupdown installed, networking.service off, no networkd", merge(systemd, ifupdown), NetworkIfupdown, "networking.service",
			map[string]string{interfaces: `auto mac/52:54:00:12:34:56/=imagefactory-build\n`},
			map[string]string{bootWants + "/networking.service": "/usr/lib/systemd/system/networking.service"}, 0},
		{"Fedora: NetworkManager enabled", merge(systemd, networkManager, networkManagerOn), NetworkNetworkManager, "",
			map[string]string{nmKeyfile: `(?s)type=ethernet\n.*autoconnect-priority=999\n.*\[ethernet\]\nmac-address=52:54:00:12:34:56\n.*\[ipv4\]\nmethod=auto\n`}, nil, 0o600},
		{"NetworkManager installed but off, networkd masked", merge(systemd, networkd, networkManager,
			map[string]string{"etc/systemd/system/systemd-networkd.service": "-> /dev/null"}), NetworkNetworkManager, "NetworkManager.service",
			map[string]string{nmKeyfile: `mac-address=52:54:00:12:34:56\n`},
			map[string]string{bootWants + "/NetworkManager.service": "/usr/lib/systemd/system/NetworkManager.service"}, 0o600},
		{"networkd and NetworkManager both enabled", merge(systemd, networkd, networkdOn, networkManager, networkManagerOn), NetworkNetworkd, "",
			map[string]string{networkdFile: `MACAddress=`}, nil, 0},
		{"networkd off, ifupdown and NetworkManager off", merge(systemd, networkd, networkManager, ifupdown), NetworkNetworkd, "systemd-networkd.service",
			map[string]string{networkdFile: `MACAddress=`}, nil, 0},
		{"Alpine: busybox ifupdown under OpenRC", merge(alpine, alpineOn), NetworkIfupdown, "",
			map[string]string{interfaces: `(?s)^auto lo\niface lo inet loopback\n\n# Written.*\nauto eth0\niface eth0 inet dhcp\n$`}, nil, 0},
		{"Alpine, networking in no runlevel", alpine, NetworkIfupdown, "networking",
			map[string]string{interfaces: `auto eth0\n`}, map[string]string{"/etc/runlevels/boot/networking": "/etc/init.d/networking"}, 0},
		{"Alpine whose interfaces configures eth0", merge(alpine, alpineOn, map[string]string{"etc/network/interfaces": "auto eth0\niface eth0 inet static\n"}), "", "", nil, nil, 0},
		{"systemd without a network manager", systemd, "", "", nil, nil, 0},
		{"networkd's unit without its program", merge(systemd, map[string]string{"usr/lib/systemd/system/systemd-networkd.service": ""}), "", "", nil, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			makeTree(t, dir, tc.tree)
			ageTree(t, dir)
			before := fixture.DirManifest(t, dir)
			root, g := inspectDir(t, dir, "root", "ssh-ed25519 AAAA build")
			plan, err := g.ProvideNetwork(root, testMAC)
			if err != nil {
				t.Fatal(err)
			}
			if plan.Manager != tc.manager || plan.Enabled != tc.enabled || g.MAC != testMAC {
				t.Errorf("plan %+v (MAC %s), want manager %q enabled %q", plan, g.MAC, tc.manager, tc.enabled)
			}
			t.Log(plan)
			if want := slices.Sorted(maps.Keys(tc.files)); !slices.Equal(plan.Files, want) {
				t.Errorf("files written %v, want %v", plan.Files, want)
			}
			for p, re := range tc.files {
				data, err := os.ReadFile(filepath.Join(dir, p))
				if err != nil || !regexp.MustCompile(re).Match(data) {
					t.Errorf("%s = %q (%v), want /%s/", p, data, err, re)
				}
				if fi, err := os.Stat(filepath.Join(dir, p)); err == nil && tc.mode != 0 && fi.Mode().Perm() != tc.mode {
					t.Errorf("%s has mode %v, want %v", p, fi.Mode(), tc.mode)
				}
			}
			for p, want := range tc.links {
				if got, err := os.Readlink(filepath.Join(dir, p)); got != want {
					t.Errorf("%s -> %q (%v), want %q", p, got, err, want)
				}
			}
			if tc.manager == "" {
				if diff := fixture.ManifestDiff(before, fixture.DirManifest(t, dir), 20); len(diff) > 0 {
					t.Errorf("written without a network manager to write for: %v", diff)
				}
				if !strings.Contains(plan.String(), "relies on the image's own configuration") {
					t.Errorf("the plan says %q", plan)
				}
			} else if s := plan.String(); !strings.Contains(s, tc.manager) || !strings.Contains(s, "removed after the boot") {
				t.Errorf("the plan says %q", s)
			}

			rep, err := g.Undo(context.Background(), root, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := fixture.ManifestDiff(before, fixture.DirManifest(t, dir), 20); len(diff) > 0 {
				t.Errorf("the tree after Undo differs from before: %v\nreport: %+v", diff, rep.Changes)
			}
			for _, p := range append(slices.Collect(maps.Keys(tc.files)), slices.Collect(maps.Keys(tc.links))...) {
				// p, or the directory made for it, is named.
				named := func(c scrub.Change) bool {
					return c.Op == "factory-boot" && (c.Path == p || strings.HasPrefix(p, c.Path+"/"))
				}
				if !slices.ContainsFunc(rep.Changes, named) {
					t.Errorf("the report does not name %s: %+v", p, rep.Changes)
				}
			}
		})
	}
}

func TestNewMAC(t *testing.T) {
	a, err := NewMAC()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewMAC()
	if !regexp.MustCompile(`^52:54:00(:[0-9a-f]{2}){3}$`).MatchString(a) || a == b {
		t.Errorf("NewMAC = %s, then %s", a, b)
	}
	root, g := inspectDir(t, t.TempDir(), "root", "k")
	if _, err := g.ProvideNetwork(root, "52:54:00"); err == nil || !strings.Contains(err.Error(), `"52:54:00"`) {
		t.Errorf("ProvideNetwork with a bad MAC = %v", err)
	}
}

// A hostile image: its /etc/network/interfaces links to a host file, its
// /etc/systemd/network to a host directory. Nothing is written on the
// host, and Undo puts the image's links back.
func TestProvideNetworkConfined(t *testing.T) {
	host := t.TempDir()
	hostFile := filepath.Join(host, "interfaces")
	if err := os.WriteFile(hostFile, []byte("HOST\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		tree    map[string]string
		wantErr string
	}{
		{"interfaces links to a host file", merge(systemd, ifupdown, ifupdownOn, map[string]string{"etc/network/interfaces": "-> " + hostFile}), ""},
		{"/etc/systemd/network links to a host directory", merge(systemd, networkd, map[string]string{"etc/systemd/network": "-> " + host}), "does not resolve to a directory"},
		{"the wants directory climbs out", merge(systemd, networkd, map[string]string{bootWants[1:]: "-> ../../../../../../../../" + host}), "does not resolve to a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			makeTree(t, dir, tc.tree)
			ageTree(t, dir)
			before := fixture.DirManifest(t, dir)
			hostBefore := fixture.DirManifest(t, host)
			root, g := inspectDir(t, dir, "root", "k")
			_, err := g.ProvideNetwork(root, testMAC)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("ProvideNetwork = %v, want error %q", err, tc.wantErr)
			}
			if _, err := g.Undo(context.Background(), root, time.Time{}); err != nil {
				t.Fatal(err)
			}
			if diff := fixture.ManifestDiff(hostBefore, fixture.DirManifest(t, host), 20); len(diff) > 0 {
				t.Errorf("the host directory changed: %v", diff)
			}
			if diff := fixture.ManifestDiff(before, fixture.DirManifest(t, dir), 20); len(diff) > 0 {
				t.Errorf("the image after Undo differs from before: %v", diff)
			}
		})
	}
}

// The image's own network configuration comes out of a boot as it went in
// (content, mode, owner, symlink targets, times), whatever the boot did to
// it; what appeared is removed; paths outside the watched ones keep what
// the boot (or a provisioner) made of them.
// With the mark taken after the boot (no provisioner ran), the same.
func TestUndoRestoresNetworkConfig(t *testing.T) {
	for _, name := range []string{"without a mark", "with a mark after the boot"} {
		t.Run(name, func(t *testing.T) { undoRestoresNetworkConfig(t, name != "without a mark") })
	}
}

func undoRestoresNetworkConfig(t *testing.T, withMark bool) {
	dir := t.TempDir()
	makeTree(t, dir, map[string]string{
		"etc/network/interfaces":                     "auto lo\niface lo inet loopback\n",
		"etc/network/interfaces.d/eth":               "allow-hotplug ens3\niface ens3 inet dhcp\n",
		"etc/network/if-up.d/hook":                   "#!/bin/sh\n",
		"etc/systemd/network/50-dhcp.network":        "[Match]\nName=en*\n",
		"etc/systemd/network/60-alias.network":       "-> 50-dhcp.network",
		"etc/systemd/network/sub/70-x.network":       "x\n",
		"etc/netplan/01-netcfg.yaml":                 "network: {version: 2}\n",
		"etc/resolv.conf":                            "-> ../run/systemd/resolve/stub-resolv.conf",
		"etc/sysconfig/network-scripts/ifcfg-eth0":   "DEVICE=eth0\n",
		"etc/sysconfig/network-scripts/network-func": "# not configuration\n",
		"etc/udev/rules.d/60-mine.rules":             "# the image's\n",
		"etc/sudoers.d/":                             "",
		"var/lib/":                                   "",
	})
	chmod := func(p string, m os.FileMode) {
		if err := os.Chmod(filepath.Join(dir, p), m); err != nil {
			t.Fatal(err)
		}
	}
	chmod("etc/network/interfaces", 0o640)
	chmod("etc/network/interfaces.d", 0o750|os.ModeSetgid)
	chmod("etc/network/interfaces.d/eth", 0o600)
	chmod("etc/netplan/01-netcfg.yaml", 0o711|os.ModeSetuid)
	for _, p := range []string{"etc/network/interfaces", "etc/systemd/network/60-alias.network", "etc/netplan"} {
		if os.Geteuid() != 0 {
			break // owners other than ours need root
		}
		if err := os.Lchown(filepath.Join(dir, p), 1000, 1001); err != nil {
			t.Fatal(err)
		}
	}
	ageTree(t, dir)
	before := fixture.DirManifest(t, dir)
	root, g := inspectDir(t, dir, "root", "k")

	// The boot.
	write := func(p, content string) {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	relink := func(p, target string) {
		os.Remove(filepath.Join(dir, p))
		if err := os.Symlink(target, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/network/interfaces", "auto lo enp0s3\n")
	chmod("etc/network/interfaces", 0o644)
	os.Lchown(filepath.Join(dir, "etc/network/interfaces"), os.Getuid(), os.Getgid())
	os.Remove(filepath.Join(dir, "etc/network/interfaces.d/eth"))
	write("etc/network/interfaces.d/50-cloud-init", "auto enp0s3\n")
	chmod("etc/network/interfaces.d", 0o755)
	relink("etc/systemd/network/50-dhcp.network", "/dev/null")
	relink("etc/systemd/network/60-alias.network", "elsewhere.network")
	write("etc/systemd/network/10-cloud-init-enp0s3.network", "[Match]\n")
	write("etc/systemd/network/new.d/override.conf", "x\n")
	write("etc/systemd/network/sub/70-x.network", "changed\n")
	os.Remove(filepath.Join(dir, "etc/netplan/01-netcfg.yaml"))
	write("etc/netplan/50-cloud-init.yaml", "network: {}\n")
	os.Remove(filepath.Join(dir, "etc/resolv.conf"))
	write("etc/resolv.conf", "nameserver 10.0.2.3\n")
	write("etc/sysconfig/network-scripts/ifcfg-eth0", "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\n")
	write("etc/sysconfig/network-scripts/ifcfg-enp0s3", "DEVICE=enp0s3\n")
	write("etc/sysconfig/network-scripts/network-func", "# changed by the boot\n")
	write("etc/udev/rules.d/70-persistent-net.rules", "SUBSYSTEM==\"net\"\n")
	write("etc/network/if-up.d/hook", "#!/bin/sh\n# a provisioner's\n")
	write("etc/sudoers.d/90-cloud-init-users", "root ALL=(ALL) NOPASSWD:ALL\n")
	write("var/lib/NetworkManager/secret_key", "factory\n")

	var mark time.Time
	if withMark {
		time.Sleep(20 * time.Millisecond) // past the kernel's timestamp tick
		mark = time.Now()
	}
	rep, err := g.Undo(context.Background(), root, mark)
	if err != nil {
		t.Fatal(err)
	}
	// Only what is not network configuration keeps the boot's change.
	diff := fixture.ManifestDiff(before, fixture.DirManifest(t, dir), 20)
	var unexpected []string
	for _, d := range diff {
		if !strings.HasPrefix(d, "changed /etc/network/if-up.d/hook:") && !strings.HasPrefix(d, "changed /etc/sysconfig/network-scripts/network-func:") {
			unexpected = append(unexpected, d)
		}
	}
	if len(unexpected) > 0 || len(diff) != 2 {
		t.Errorf("after Undo, the tree differs from before in %v\n(all differences: %v)", unexpected, diff)
	}
	got := map[string]string{}
	for _, c := range rep.Changes {
		if c.Op == "factory-boot" {
			got[c.Path] = string(c.Action)
		}
	}
	for p, a := range map[string]string{
		"/etc/network/interfaces":                             "changed",
		"/etc/network/interfaces.d/eth":                       "created",
		"/etc/network/interfaces.d/50-cloud-init":             "removed",
		"/etc/network/interfaces.d":                           "changed",
		"/etc/systemd/network/50-dhcp.network":                "changed",
		"/etc/systemd/network/60-alias.network":               "changed",
		"/etc/systemd/network/10-cloud-init-enp0s3.network":   "removed",
		"/etc/systemd/network/new.d":                          "removed",
		"/etc/systemd/network/sub/70-x.network":               "changed",
		"/etc/netplan/01-netcfg.yaml":                         "created",
		"/etc/netplan/50-cloud-init.yaml":                     "removed",
		"/etc/resolv.conf":                                    "changed",
		"/etc/sysconfig/network-scripts/ifcfg-eth0":           "changed",
		"/etc/sysconfig/network-scripts/ifcfg-enp0s3":         "removed",
		"/etc/udev/rules.d/70-persistent-net.rules":           "removed",
		"/etc/sudoers.d/90-cloud-init-users":                  "removed",
		"/var/lib/NetworkManager":                             "removed",
		"/etc/network/if-up.d/hook":                           "",
		"/etc/sysconfig/network-scripts/network-func":         "",
		"/etc/systemd/network/sub":                            "",
		"/etc/systemd/network/new.d/override.conf":            "",
		"/etc/network/interfaces.d/50-cloud-init-nonexisting": "",
	} {
		if got[p] != a {
			t.Errorf("report for %s: %q, want %q", p, got[p], a)
		}
	}
	// A second Undo finds nothing left.
	if rep, err := g.Undo(context.Background(), root, mark); err != nil || len(rep.Changes) != 0 {
		t.Errorf("second Undo: %v, %+v", err, rep.Changes)
	}
}

// ageTree sets every time in the tree at dir to a fixed past one, so that
// a time put back differs from one a write leaves.
func ageTree(t *testing.T, dir string) {
	t.Helper()
	old := unix.NsecToTimespec(time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano())
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{old, old}, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
}
