package imagefactory_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx"
	"github.com/spdx/tools-golang/spdxlib"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// The bill of materials: written beside the artifact, read offline from
// the image's package databases, compared here with what the package
// managers' own tools list in the output image.

// sbomTestDeb is the package the provisioner installs: made here with
// dpkg-deb, installed with dpkg -i, no network.
const (
	sbomTestDeb     = "imagefactory-sbom-test"
	sbomTestVersion = "1.0-1"
)

// makeDeb builds sbomTestDeb (Architecture: all) into dir.
func makeDeb(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "deb")
	for name, content := range map[string]string{
		"DEBIAN/control": "Package: " + sbomTestDeb + "\nVersion: " + sbomTestVersion +
			"\nArchitecture: all\nMaintainer: imagefactory tests <tests@imagefactory.invalid>\n" +
			"Description: installed by the SBOM acceptance test\n",
		"usr/share/doc/" + sbomTestDeb + "/README": "marker\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(dir, sbomTestDeb+".deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	return deb
}

// readSBOM reads an SPDX file back with the SPDX library's JSON reader
// and validates it.
func readSBOM(t *testing.T, path string) *spdx.Document {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the SBOM: %v", err)
	}
	defer f.Close()
	doc, err := spdxjson.Read(f)
	if err != nil {
		t.Fatalf("SPDX reader on %s: %v", path, err)
	}
	if err := spdxlib.ValidateDocument(doc); err != nil {
		t.Fatalf("SPDX validation of %s: %v", path, err)
	}
	return doc
}

// sbomPackages lists the SBOM's packages of manager as "name arch
// version", sorted.
func sbomPackages(doc *spdx.Document, manager string) []string {
	var out []string
	for _, p := range doc.Packages {
		arch, ok := strings.CutPrefix(p.PackageComment, "installed by "+manager+", architecture ")
		if !ok {
			continue
		}
		out = append(out, p.PackageName+" "+arch+" "+p.PackageVersion)
	}
	slices.Sort(out)
	return out
}

// dpkgQuery is `dpkg-query -W` on the image mounted at dir: "name arch
// version", sorted.
func dpkgQuery(t *testing.T, dir string) []string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "--admindir="+filepath.Join(dir, "var/lib/dpkg"),
		"-W", "-f", "${Package} ${Architecture} ${Version}\n").Output()
	if err != nil {
		t.Fatalf("dpkg-query -W on the output: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	slices.Sort(lines)
	return lines
}

// TestAccSBOM builds from the cached Debian tree (a disk made from it),
// installs a package made here in the chroot, then scrubs and sparsifies
// to qcow2 (keeping the raw image) and writes Packer's manifest. The build
// output lists the package as added; the SBOM reads back through the SPDX
// library and lists exactly what dpkg-query lists in the output image;
// scrub passes it on, sparsify copies it beside the qcow2 and lists it
// among its files.
func TestAccSBOM(t *testing.T) {
	a := newAcc(t)
	tarball := fixture.DebianRootfs(t, false)
	deb := makeDeb(t, a.Dir)
	kernel := filepath.Join(a.Dir, "vmlinuz-test")
	if err := os.WriteFile(kernel, []byte("a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := mustBuild(t, a, treeTemplate(fmt.Sprintf(`
  source_rootfs = %q
  kernel        = %q
`, tarball, kernel), fmt.Sprintf(`
  provisioner "file" {
    source      = %q
    destination = "/root/sbom-test.deb"
  }
  provisioner "shell" {
    inline = ["dpkg -i /root/sbom-test.deb", "rm /root/sbom-test.deb"]
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {
      format              = "qcow2"
      keep_input_artifact = true
    }
    post-processor "manifest" {
      output = "${path.cwd}/manifest.json"
    }
  }
`, deb)), nil)
	img := filepath.Join(a.out(), "t.raw")
	sbomFile := img + ".spdx.json"
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.Contains(l, "the SBOM") || strings.Contains(l, "Packages against") {
			t.Logf("build %s: %s", res.Duration.Round(time.Second), strings.TrimSpace(l))
		}
	}

	added := fmt.Sprintf("added %s:all (dpkg) %s", sbomTestDeb, sbomTestVersion)
	if !strings.Contains(res.Output, "Packages against the base: 1 added, 0 removed, 0 upgraded") || !strings.Contains(res.Output, added) {
		t.Errorf("the build output does not list %s as the one package added:\n%s", sbomTestDeb, res.Output)
	}
	doc := readSBOM(t, sbomFile)
	if doc.DocumentName != "t.raw" || strings.HasPrefix(doc.DocumentComment, "incomplete") {
		t.Errorf("SBOM name %q, comment %q", doc.DocumentName, doc.DocumentComment)
	}
	got := sbomPackages(doc, "dpkg")
	var want []string
	fixture.WithReadOnlyMount(t, img, lastPartition(t, img, "ext4"), func(dir string) {
		want = dpkgQuery(t, dir)
	})
	if !slices.Equal(got, want) {
		t.Errorf("the SBOM's dpkg packages (%d) differ from dpkg-query -W in the image (%d):\nSBOM only: %v\ndpkg-query only: %v",
			len(got), len(want), minus(got, want), minus(want, got))
	}
	if !slices.Contains(got, sbomTestDeb+" all "+sbomTestVersion) || len(got) < 50 {
		t.Errorf("the SBOM lists %d dpkg packages, %s among them? %v", len(got), sbomTestDeb, got)
	}
	if doc.Packages[0].PrimaryPackagePurpose != "OPERATING-SYSTEM" || doc.Packages[0].PackageVersion != "12" {
		t.Errorf("the SBOM's OS: %+v", doc.Packages[0])
	}

	// sparsify's qcow2 has the same packages beside it, in its artifact's
	// files, in a document named after the qcow2 (it kept "t.raw").
	qdoc := readSBOM(t, filepath.Join(a.out(), "t.qcow2.spdx.json"))
	if qdoc.DocumentName != "t.qcow2" || !strings.Contains(qdoc.DocumentNamespace, "/t.qcow2-") || qdoc.DocumentNamespace == doc.DocumentNamespace {
		t.Errorf("t.qcow2.spdx.json: name %q, namespace %q (the builder's: %q)", qdoc.DocumentName, qdoc.DocumentNamespace, doc.DocumentNamespace)
	}
	if !slices.Equal(sbomPackages(qdoc, "dpkg"), got) {
		t.Errorf("t.qcow2.spdx.json lists other packages than the builder's SBOM")
	}
	var manifest struct {
		Builds []struct {
			Files []struct{ Name string } `json:"files"`
		} `json:"builds"`
	}
	if b, err := os.ReadFile(filepath.Join(a.Dir, "manifest.json")); err != nil || json.Unmarshal(b, &manifest) != nil || len(manifest.Builds) != 1 {
		t.Fatalf("manifest.json: %v\n%s", err, b)
	}
	var files []string
	for _, f := range manifest.Builds[0].Files {
		files = append(files, filepath.Base(f.Name))
	}
	if !slices.Contains(files, "t.qcow2") || !slices.Contains(files, "t.qcow2.spdx.json") {
		t.Errorf("sparsify's artifact files %v lack the qcow2 or its SBOM", files)
	}
	a.assertNoLeaksHere(t)
}

// minus is what a holds that b does not.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// TestAccSBOMBaseImages: base-image builds of small disks. A corrupt
// /var/lib/dpkg/status is a warning naming it, the image is still made and
// the SBOM says it is incomplete; sbom = false writes no SBOM; the
// rpm-family replica's SBOM lists what rpm -qa lists in the output.
func TestAccSBOMBaseImages(t *testing.T) {
	t.Run("corrupt dpkg status", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) {
			os.MkdirAll(filepath.Join(dir, "var/lib/dpkg"), 0o755)
			status := "Package: busybox\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.35.0-4+b3\n\n" +
				"Pack\x00age: \x01\x02 not a field\nStatus: install ok\n"
			os.WriteFile(filepath.Join(dir, "var/lib/dpkg/status"), []byte(status), 0o644)
		}})
		res := mustBuild(t, a, template("", ""), map[string]string{"base": disk.Path})
		if !strings.Contains(res.Output, "Warning: the SBOM is incomplete: /var/lib/dpkg/status") {
			t.Errorf("no warning naming /var/lib/dpkg/status:\n%s", res.Output)
		}
		img := filepath.Join(a.out(), "t.raw")
		if _, err := os.Stat(img); err != nil {
			t.Fatalf("no image: %v", err)
		}
		doc := readSBOM(t, img+".spdx.json")
		if !strings.HasPrefix(doc.DocumentComment, "incomplete: /var/lib/dpkg/status") {
			t.Errorf("the SBOM does not say it is incomplete: comment %q", doc.DocumentComment)
		}
		if got := sbomPackages(doc, "dpkg"); !slices.Equal(got, []string{"busybox amd64 1:1.35.0-4+b3"}) {
			t.Errorf("the SBOM keeps %v of the readable status", got)
		}
		a.assertNoLeaks(t)
	})
	t.Run("sbom false", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: debianTree})
		res := mustBuild(t, a, template("  sbom = false\n", ""), map[string]string{"base": disk.Path})
		if left, _ := filepath.Glob(filepath.Join(a.out(), "*.spdx.json*")); len(left) > 0 || strings.Contains(res.Output, "Wrote the SBOM") {
			t.Errorf("sbom = false wrote %v:\n%s", left, res.Output)
		}
		a.assertNoLeaks(t)
	})
	t.Run("rpm family", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) { fixture.RPMFamilyFiles(t, dir) }})
		mustBuild(t, a, template("", ""), map[string]string{"base": disk.Path})
		img := filepath.Join(a.out(), "t.raw")
		doc := readSBOM(t, img+".spdx.json")
		var got []string
		for _, p := range sbomPackages(doc, "rpm") {
			f := strings.Fields(p) // name arch version
			got = append(got, f[0]+"-"+f[2]+"."+f[1])
		}
		var want []string
		fixture.WithReadOnlyMount(t, img, disk.Root(), func(dir string) {
			want = fixture.RPMQueryAll(t, dir)
		})
		slices.Sort(want)
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("the SBOM's rpm packages %v, rpm -qa in the image %v", got, want)
		}
		if doc.Packages[0].PackageVersion != "9.4" {
			t.Errorf("the SBOM's OS: %+v", doc.Packages[0])
		}
		a.assertNoLeaks(t)
	})
}
