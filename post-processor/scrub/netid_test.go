package scrub

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestScrubNetworkIdentity: the post-processor with its defaults, on a disk
// image whose root carries the factory's network state and the template's
// hostname, leaves no file (read back with debugfs) naming the factory's
// MAC, its lease or the template's name, and its JSON report names the
// operation of each change.
func TestScrubNetworkIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	files := map[string]string{}
	for _, m := range []map[string]string{fixture.NetIDFiles, fixture.HostnameFiles} {
		for p, c := range m {
			files[p] = c
		}
	}
	disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) { fixture.WriteFiles(t, dir, files) }})
	before := fixture.LeakSnapshot()
	var p PostProcessor
	if err := p.Configure(map[string]interface{}{}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: []string{disk.Path}}); err != nil {
		t.Fatalf("scrub: %v", err)
	}
	before.AssertNoLeaksIn(t, filepath.Dir(disk.Path))

	data, err := os.ReadFile(strings.TrimSuffix(disk.Path, filepath.Ext(disk.Path)) + ".scrub.json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Changes []struct{ Op, Path, Action string }
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	ops := map[string]string{}
	for _, c := range rep.Changes {
		ops[c.Path] += c.Op + ":" + c.Action + " "
	}
	for path, want := range map[string]string{
		"/etc/NetworkManager/system-connections/office-static": "net-nmconn:changed ",
		"/var/lib/NetworkManager/secret_key":                   "net-nmconn:removed ",
		"/etc/netplan/50-cloud-init.yaml":                      "net-hwaddr:changed ",
		"/etc/systemd/network/70-lan0.link":                    "net-hwaddr:removed ",
		"/var/lib/systemd/network/dhcp-server-lease/ens3":      "networkd-state:removed ",
		"/var/lib/dhcpcd/duid":                                 "dhcp-client-state:removed ",
		"/etc/hosts":                                           "hostname:changed ",
		"/etc/sysconfig/network-scripts/ifcfg-ens3":            "hostname:changed ", // both keys named the template: gone before net-hostname
	} {
		if ops[path] != want {
			t.Errorf("report for %s: %q, want %q", path, ops[path], want)
		}
	}
	words := append([]string{fixture.FactoryLease, fixture.TemplateHost, fixture.TemplateFQDN}, fixture.FactoryMACForms...)
	re := fixture.WordsRE(words...)
	root := disk.Root()
	for path := range files {
		if !fixture.FileExistsOnDisk(t, disk.Path, root.Offset, path) {
			continue
		}
		if got := fixture.ReadFileFromDisk(t, disk.Path, root.Offset, path); re.Match(got) {
			t.Errorf("%s still names %q:\n%s", path, re.FindSubmatch(got)[2], got)
		}
	}
	fixture.FsckPartition(t, disk.Path, root)
}
