package scrub

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// sbomTree adds to the fixture's root two kernels' modules and a pacman
// local database of two packages (libalpm's layout: a NAME-VERSION
// directory with a desc file per package, pacman(8) --dbpath), so that
// remove_paths can take one package, one kernel and os-release.
func sbomTree(dir string) {
	for name, content := range map[string]string{
		"lib/modules/6.1.0-9-test/modules.dep":  "",
		"lib/modules/6.1.0-10-test/modules.dep": "",
		"var/lib/pacman/local/ALPM_DB_VERSION":  "9\n",
		"var/lib/pacman/local/foo-1.0-1/desc":   "%NAME%\nfoo\n\n%VERSION%\n1.0-1\n\n%ARCH%\nx86_64\n\n",
		"var/lib/pacman/local/bar-2.0-1/desc":   "%NAME%\nbar\n\n%VERSION%\n2.0-1\n\n%ARCH%\nx86_64\n\n",
		"boot/grub/grub.cfg":                    "# not a kernel\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			panic(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			panic(err)
		}
	}
}

// TestSBOMAfterRemovePaths scrubs, in process, a fixture disk whose input
// artifact has an SBOM read from it and its registry labels. remove_paths
// that take os-release, a kernel's modules and a pacman package make the
// scrub read the packages again: the SBOM is replaced under its name
// (reproducible: created at the input's epoch), the change is printed and
// the registry labels are the new SBOM's. remove_paths that touch /boot
// but no kernel, or nothing the SBOM reads, leave the input's SBOM and
// labels.
func TestSBOMAfterRemovePaths(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	const epoch = 1700000000
	for _, c := range []struct {
		name    string
		remove  []string
		rewrite bool
	}{
		{"rewritten", []string{"/etc/os-release", "/lib/modules/6.1.0-9-test", "/var/lib/pacman/local/foo-1.0-1"}, true},
		{"boot-but-no-kernel", []string{"/boot/grub"}, false},
		{"untouched", []string{"/etc/motd"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := fixture.LeakSnapshot()
			disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: sbomTree})
			file := packerglue.SBOMName(disk.Path)
			var base *sbom.Inventory
			fixture.WithReadOnlyMount(t, disk.Path, disk.Root(), func(dir string) {
				var err error
				if base, err = sbom.Read(dir); err != nil {
					t.Fatal(err)
				}
			})
			data, err := base.SPDX(filepath.Base(disk.Path), repro.New(epoch, "t"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
			labels, err := packerglue.LabelsOf(base, file)
			if err != nil {
				t.Fatal(err)
			}
			inLabels := map[string]string{"format": "raw"}
			for k, v := range labels {
				inLabels[k] = v.(string)
			}
			in := &packersdk.MockArtifact{IdValue: disk.Path, FilesValue: []string{disk.Path, file}, StateValues: map[string]interface{}{
				repro.StateKey:                 int64(epoch),
				registryimage.ArtifactStateURI: &registryimage.Image{ImageID: disk.Path, Labels: inLabels},
			}}

			var out, errs bytes.Buffer
			ui := &packersdk.BasicUi{Reader: strings.NewReader(""), Writer: &out, ErrorWriter: &errs}
			var p PostProcessor
			if err := p.Configure(map[string]interface{}{"operations": []string{"remove-paths"}, "remove_paths": c.remove, "packer_build_name": "t"}); err != nil {
				t.Fatal(err)
			}
			art, _, _, err := p.PostProcess(context.Background(), ui, in)
			if err != nil {
				t.Fatalf("PostProcess: %v\n%s%s", err, out.String(), errs.String())
			}
			a := art.(*Artifact)
			if !reflect.DeepEqual(a.Files(), []string{disk.Path, a.Report, file}) {
				t.Errorf("files %v", a.Files())
			}
			img, _ := a.State(registryimage.ArtifactStateURI).(*registryimage.Image)
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !c.rewrite {
				if !bytes.Equal(got, data) || a.SBOMLabels != nil || img == nil || !reflect.DeepEqual(img.Labels, inLabels) {
					t.Errorf("the input's SBOM or labels changed: labels %v\n%s", img, out.String())
				}
				if strings.Contains(out.String(), "Wrote the SBOM") {
					t.Errorf("SBOM written again:\n%s", out.String())
				}
				before.AssertNoLeaksUnder(t, filepath.Dir(disk.Path))
				return
			}

			var doc struct {
				Name         string
				CreationInfo struct{ Created string }
				Packages     []struct {
					Name        string `json:"name"`
					VersionInfo string `json:"versionInfo"`
				}
			}
			if err := json.Unmarshal(got, &doc); err != nil {
				t.Fatalf("the new SBOM: %v", err)
			}
			var names []string
			for _, p := range doc.Packages {
				names = append(names, p.Name+" "+p.VersionInfo)
			}
			// The OS element (no os-release: "unknown"), the kernel left, bar.
			if doc.Name != filepath.Base(disk.Path) || doc.CreationInfo.Created != time.Unix(epoch, 0).UTC().Format(time.RFC3339) ||
				!reflect.DeepEqual(names, []string{"unknown ", "kernel 6.1.0-10-test", "bar 2.0-1"}) {
				t.Errorf("the new SBOM: name %q, created %q, packages %q", doc.Name, doc.CreationInfo.Created, names)
			}
			// Written again from the image as it is now: the same bytes.
			var now *sbom.Inventory
			fixture.WithReadOnlyMount(t, disk.Path, disk.Root(), func(dir string) { now, err = sbom.Read(dir) })
			if want, _ := now.SPDX(filepath.Base(disk.Path), repro.New(epoch, "t")); err != nil || !bytes.Equal(got, want) {
				t.Errorf("the new SBOM is not the reproducible SPDX of the scrubbed image (%v)", err)
			}
			wantLabels := map[string]string{"os": "", "os_version": "", "kernel": "6.1.0-10-test", "package_count": "1",
				"sbom_sha256": fixture.Sha256(t, file), "format": "raw"}
			if img == nil || !reflect.DeepEqual(img.Labels, wantLabels) {
				t.Errorf("registry labels %v, want %v", img, wantLabels)
			}
			for _, line := range []string{
				"Wrote the SBOM " + file + " again",
				"removed /etc/os-release (remove-paths)",
				"OS: Debian GNU/Linux 12 (bookworm) -> unknown",
				"Kernels: 6.1.0-10-test, 6.1.0-9-test -> 6.1.0-10-test",
				"Packages against the input: 0 added, 1 removed, 0 upgraded (1 packages)",
				"removed foo:x86_64 (pacman) 1.0-1",
			} {
				if !strings.Contains(out.String(), line) {
					t.Errorf("the output lacks %q:\n%s", line, out.String())
				}
			}
			if strings.Contains(errs.String(), "SBOM") {
				t.Errorf("warnings: %s", errs.String())
			}
			before.AssertNoLeaksUnder(t, filepath.Dir(disk.Path))
		})
	}
}
