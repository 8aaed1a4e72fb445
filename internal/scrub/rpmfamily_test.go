package scrub

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
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
	for p := range fixture.RPMFamilyScrubbed {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("the fixture lacks %s: %v", p, err)
		}
	}
	if f := fixture.FilesNaming(t, dir, fixture.FactoryMAC); len(f) != 2 {
		t.Fatalf("the fixture's files naming the factory's MAC: %q, want the ifcfg file and the profile", f)
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
	js, err := json.Marshal(rep) // the report as the post-processor writes it
	if err != nil {
		t.Fatal(err)
	}
	fixture.AssertRPMFamilyScrubbed(t, dir, js)
}
