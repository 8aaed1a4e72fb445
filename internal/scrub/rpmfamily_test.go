package scrub

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// TestRPMFamilyDefaults scrubs a Rocky 9 template (a real rpm database made
// by rpm, dnf, subscription-manager and RHN state) with the default
// operations: each piece of family state is removed by the operation the
// JSON report names, the factory's MAC is gone, and rpm still lists and
// verifies the installed package.
func TestRPMFamilyDefaults(t *testing.T) {
	dir := t.TempDir()
	fixture.RPMFamilyTree(t, dir)
	db := fixture.RPMDBPath
	// path -> the operation that must remove it.
	removed := map[string]string{
		db + "/__db.001":         "rpm-db",
		db + "/__db.002":         "rpm-db",
		db + "/__db.003":         "rpm-db",
		db + "/.dbenv.lock":      "rpm-db",
		db + "/.rpm.lock":        "rpm-db",
		db + "/rpmdb.sqlite-shm": "rpm-db",
		db + "/rpmdb.sqlite-wal": "rpm-db", // empty after rpm's clean close

		"/var/cache/dnf/baseos-044cae74d71fe9ea/repodata/repomd.xml":                "package-manager-cache",
		"/var/cache/dnf/baseos-044cae74d71fe9ea/packages/tool-1.0-1.el9.x86_64.rpm": "package-manager-cache",
		"/var/cache/dnf/baseos.solv":                                                "package-manager-cache",
		"/var/cache/dnf/expired_repos.json":                                         "package-manager-cache",
		"/var/cache/dnf/metadata_lock.pid":                                          "package-manager-cache",
		"/var/lib/dnf/rpmdb_lock.pid":                                               "package-manager-state",
		"/var/lib/dnf/repos/baseos-044cae74d71fe9ea/countme":                        "package-manager-state",
		"/var/log/dnf.log":                                                          "logfiles",
		"/var/log/dnf.rpm.log":                                                      "logfiles",
		"/var/log/hawkey.log":                                                       "logfiles",
		"/var/lib/yum/uuid":                                                         "yum-uuid",

		"/etc/pki/consumer/cert.pem":                  "rh-subscription-manager",
		"/etc/pki/consumer/key.pem":                   "rh-subscription-manager",
		"/etc/pki/entitlement/8675309.pem":            "rh-subscription-manager",
		"/etc/pki/entitlement/8675309-key.pem":        "rh-subscription-manager",
		"/var/lib/rhsm/cache/installed_products.json": "rh-subscription-manager",
		"/var/lib/rhsm/facts/facts.json":              "rh-subscription-manager",
		"/etc/sysconfig/rhn/systemid":                 "rhn-systemid",
		"/etc/sysconfig/rhn/osad-auth.conf":           "rhn-systemid",
	}
	kept := []string{
		db + "/rpmdb.sqlite", "/var/lib/dnf/history.sqlite", "/etc/dnf/dnf.conf", "/etc/rhsm/rhsm.conf",
		"/etc/sysconfig/rhn/up2date", "/etc/os-release", "/etc/redhat-release",
		"/usr/share/imagefactory-fixture/README",
	}
	for p := range removed {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("the fixture lacks %s: %v", p, err)
		}
	}

	root, err := inroot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ops, err := Select(nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), root, ops, Options{})
	if err != nil {
		t.Fatalf("scrub: %v", err)
	}

	// The report as the post-processor writes it.
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Changes []struct{ Op, Path, Action string }
	}
	if err := json.Unmarshal(js, &decoded); err != nil {
		t.Fatal(err)
	}
	byPath := map[string]string{}
	for _, c := range decoded.Changes {
		if c.Action == string(Removed) {
			byPath[c.Path] = c.Op
		}
	}
	for p, op := range removed {
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s is still there", p)
		}
		if byPath[p] != op {
			t.Errorf("report: %s removed by %q, want %q", p, byPath[p], op)
		}
	}
	for _, p := range kept {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}

	// No file still names the factory's NIC (whichever operations see to it).
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(bytes.ToLower(data), []byte(fixture.FactoryMAC)) {
			t.Errorf("%s still names the factory's MAC %s", strings.TrimPrefix(p, dir), fixture.FactoryMAC)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// rpm still has its database: the same packages, and they verify.
	if got := fixture.RPMQueryAll(t, dir); !reflect.DeepEqual(got, []string{fixture.RPMPackage}) {
		t.Errorf("rpm -qa after scrub = %q, want [%s]", got, fixture.RPMPackage)
	}
	fixture.RPMVerify(t, dir, "imagefactory-fixture")
}
