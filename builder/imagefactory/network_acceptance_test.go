package imagefactory_test

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// netConfigPaths are the image's network configuration locations that a
// qemu build must hand back unchanged (the *.wants directories of
// /etc/systemd/system are added by netManifest).
var netConfigPaths = []string{"etc/network", "etc/systemd/network", "etc/netplan", "etc/resolv.conf", "etc/udev/rules.d"}

// netManifest lists, for the root partition of raw, every file under
// netConfigPaths and /etc/systemd/system/*.wants (fixture.DirManifest:
// content, mode, owner, times, link targets).
func netManifest(t *testing.T, raw string) map[string]string {
	t.Helper()
	out := map[string]string{}
	fixture.WithReadOnlyMount(t, raw, lastPartition(t, raw, "ext4"), func(dir string) {
		paths := append([]string(nil), netConfigPaths...)
		wants, _ := filepath.Glob(filepath.Join(dir, "etc/systemd/system/*.wants"))
		for _, w := range wants {
			paths = append(paths, strings.TrimPrefix(w, dir+"/"))
		}
		for _, p := range paths {
			if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
				out["/"+p] = "missing"
				continue
			}
			for k, v := range fixture.DirManifest(t, filepath.Join(dir, p)) {
				out["/"+p+strings.TrimSuffix(k, "/")] = v
			}
		}
	})
	return out
}

// TestAccQemuNetwork: the factory boot reaches SSH whatever network
// configuration the image has. Two disks chained on the bootstrap tests'
// debootstrap tree (systemd, udev, sshd; no cloud-init): one with no
// network configuration at all (systemd-networkd installed, off), one
// with ifupdown installed from Debian's archive naming ens3, the NIC's
// name on QEMU's pc machine, which the q35 factory VM does not have
// (networkd off, no .network file). Both provision over SSH with the
// key injected offline, and their network configuration comes out of
// the qemu build exactly as it went in, but for what the provisioners
// wrote there: on the disk without network configuration, a shell
// provisioner writes a .network file and a file provisioner a netplan
// file, and both are in the output byte for byte.
func TestAccQemuNetwork(t *testing.T) {
	requireQemu(t)
	t.Parallel() // boots under TCG (one core): two such tests run at once, after the sequential ones
	a := newAcc(t)
	noNet := filepath.Join(a.Dir, "nonet")
	res := mustBuild(t, a, treeTemplate(bootstrapSource, `
  provisioner "shell" {
    inline = [
      # No network configuration: no .network file, networkd and ifupdown not enabled.
      "! ls /etc/systemd/network/*.network || exit 1",
      "! systemctl is-enabled systemd-networkd.service || exit 1",
      "test ! -e /sbin/ifup",
    ]
  }
`), map[string]string{"out": noNet})
	t.Logf("disk without network configuration: %s", res.Duration)
	noNetImg := filepath.Join(noNet, "t.qcow2")

	ifupdown := filepath.Join(a.Dir, "ifupdown")
	res = mustBuild(t, a, template(`
  use_backing_file = true
  mount_path       = "${path.cwd}/mnt"
`, `
  provisioner "shell" {
    inline = [
      "apt-get update -q",
      "DEBIAN_FRONTEND=noninteractive apt-get install -y -q ifupdown",
      "printf 'source /etc/network/interfaces.d/*\\n\\nauto lo\\niface lo inet loopback\\n\\nallow-hotplug ens3\\niface ens3 inet dhcp\\n' > /etc/network/interfaces",
      "apt-get clean",
      "systemctl is-enabled networking.service",
      "! systemctl is-enabled systemd-networkd.service || exit 1",
      "! ls /etc/systemd/network/*.network || exit 1",
      "command -v dhclient",
    ]
  }
`), map[string]string{"base": noNetImg, "out": ifupdown})
	t.Logf("disk with ifupdown naming ens3: %s", res.Duration)
	ifupdownImg := filepath.Join(ifupdown, "t.qcow2")

	const appNetwork, appNetplan = "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n", "network:\n  version: 2\n  renderer: networkd\n"
	for _, tc := range []struct {
		name, base, manager string
		provision           string            // more provisioners
		written             map[string]string // by them in the network configuration: content
	}{
		{"ifupdown-ens3", ifupdownImg, "Network for the factory boot: ifupdown, DHCP on the NIC matched by MAC 52:54:00:", "", nil},
		{"no-network-configuration", noNetImg, "Network for the factory boot: systemd-networkd (systemd-networkd.service enabled for this boot only), DHCP on the NIC matched by MAC 52:54:00:",
			// networkd reads its files when it starts: the factory's
			// network is not disturbed.
			`
  provisioner "shell" {
    inline = ["printf '` + strings.ReplaceAll(appNetwork, "\n", `\\n`) + `' > /etc/systemd/network/60-app.network"]
  }
  provisioner "shell" {
    inline = ["mkdir -p /etc/netplan"]
  }
  provisioner "file" {
    content     = "` + strings.ReplaceAll(appNetplan, "\n", `\n`) + `"
    destination = "/etc/netplan/60-app.yaml"
  }
  provisioner "shell" {
    inline = ["chmod 600 /etc/netplan/60-app.yaml"]
  }
`, map[string]string{"/etc/systemd/network/60-app.network": appNetwork, "/etc/netplan/60-app.yaml": appNetplan}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(a.Dir, "qemu-"+tc.name)
			res := mustBuild(t, a, template(`
  strategy         = "qemu"
  memory           = 1024
  inject_ssh_key   = true
  shutdown_command = "systemctl poweroff"
  use_backing_file = true
`, `
  provisioner "shell" {
    inline = [
      "ls /sys/class/net",
      "cat /sys/class/net/enp0s3/address",
      "getent hosts deb.debian.org",
    ]
  }
`+tc.provision), map[string]string{"base": tc.base, "out": out})
			t.Logf("qemu build %s", res.Duration)
			for _, line := range strings.Split(res.Output, "\n") {
				if regexp.MustCompile(`Network for the factory boot|\(factory-boot\)|52:54:00|enp0s3|deb\.debian\.org|Guest clock|Kept what|: (made|changed|removed) by a provisioner`).MatchString(line) {
					t.Log(strings.TrimSpace(line))
				}
			}
			assertQemuBuildSteps(t, res.Output)
			if !strings.Contains(res.Output, tc.manager) {
				t.Errorf("the build does not say %q:\n%s", tc.manager, res.Output)
			}
			// The factory NIC, at its fixed slot (enp0s3) with the build's
			// MAC, is the one the guest sees.
			if m := regexp.MustCompile(`matched by MAC (52:54:00(:[0-9a-f]{2}){3})`).FindStringSubmatch(res.Output); m == nil || strings.Count(res.Output, m[1]) < 2 {
				t.Errorf("the guest's enp0s3 does not have the MAC the build chose (%v):\n%s", m, res.Output)
			}
			raw := toRaw(t, filepath.Join(out, "t.qcow2"))
			before, after := netManifest(t, toRaw(t, tc.base)), netManifest(t, raw)
			// What the provisioners wrote is there byte for byte, and
			// named as kept; the directories it went in changed by it.
			for p, content := range tc.written {
				if got := readOut(t, raw, lastPartition(t, raw, "ext4"), p); got != content {
					t.Errorf("%s in the output = %q, want what the provisioner wrote, %q", p, got, content)
				}
				named := false // p, or the directory made for it
				for q := p; q != "/etc"; q = path.Dir(q) {
					named = named || strings.Contains(res.Output, q+": made by a provisioner\n")
				}
				if !named {
					t.Errorf("the build does not say it kept %s:\n%s", p, res.Output)
				}
				if mode := map[bool]string{true: "mode=100600 ", false: "mode=100644 "}[strings.HasPrefix(p, "/etc/netplan/")]; !strings.HasPrefix(after[p], mode) {
					t.Errorf("%s in the output: %s, want %s", p, after[p], mode)
				}
				delete(after, p)
				for d := path.Dir(p); before[d] != ""; d = path.Dir(d) {
					if before[d] != "missing" {
						before[d], after[d] = withoutMtime(before[d]), withoutMtime(after[d])
						break
					}
					delete(before, d) // made by the provisioner
					delete(after, d)
				}
			}
			if diff := fixture.ManifestDiff(before, after, 30); len(diff) > 0 {
				t.Errorf("the image's network configuration changed in the qemu build:\n%s", strings.Join(diff, "\n"))
			}
			if len(before) < 5 {
				t.Errorf("the manifest of the network configuration is nearly empty: %v", before)
			}
			assertNoQemuLeaks(t, a)
		})
	}
}

// withoutMtime is a manifest line without its mtime.
func withoutMtime(line string) string {
	return regexp.MustCompile(` mtime=\S+`).ReplaceAllString(line, "")
}
