package packerglue

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
)

// SBOMSuffix ends the name of an image's bill of materials:
// <image file name>.spdx.json, beside the image.
const SBOMSuffix = ".spdx.json"

// SBOMLabels are the HCP Packer registry labels the SBOM gives an
// artifact; post-processors carry them from their input.
var SBOMLabels = []string{"os", "os_version", "kernel", "package_count", "sbom_sha256"}

// SBOMName is the SBOM file of the image file image.
func SBOMName(image string) string { return image + SBOMSuffix }

// FindSBOM is the artifact's SBOM among its files, or "" when it has none.
func FindSBOM(files []string) string {
	for _, f := range files {
		if strings.HasSuffix(f, SBOMSuffix) {
			return f
		}
	}
	return ""
}

// WriteFileAtomic writes data to path through a temporary name in the same
// directory, renamed over path once whole and synced: no reader ever sees a
// half-written file under path.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// CopySBOM writes the SBOM from beside image, as SBOMName(image),
// atomically, named after image (sbom.Rename: its documentName and
// documentNamespace, derived from src as the builder derives them). It
// returns the new file's name and the hex sha256 of its bytes (the
// sbom_sha256 label).
func CopySBOM(from, image string, src *repro.Source) (to, sum string, err error) {
	data, err := os.ReadFile(from)
	if err != nil {
		return "", "", fmt.Errorf("the input's SBOM: %w", err)
	}
	if data, err = sbom.Rename(data, filepath.Base(image), src); err != nil {
		return "", "", fmt.Errorf("the input's SBOM %s: %w", from, err)
	}
	to = SBOMName(image)
	if err := WriteFileAtomic(to, data, 0o644); err != nil {
		return "", "", fmt.Errorf("writing the SBOM %s: %w", to, err)
	}
	h := sha256.Sum256(data)
	return to, hex.EncodeToString(h[:]), nil
}

// LabelsOf are the HCP Packer registry labels of the inventory inv whose
// SPDX document is the file spdx: os (os-release's ID), os_version
// (VERSION_ID), kernel (the kernel versions, comma-separated),
// package_count, sbom_sha256 (hex of the file).
func LabelsOf(inv *sbom.Inventory, spdx string) (map[string]interface{}, error) {
	f, err := os.Open(spdx)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("sha256 of %s: %w", spdx, err)
	}
	return map[string]interface{}{
		"os":            inv.OS.ID,
		"os_version":    inv.OS.VersionID,
		"kernel":        strings.Join(inv.Kernels, ","),
		"package_count": fmt.Sprint(len(inv.Packages)),
		"sbom_sha256":   hex.EncodeToString(h.Sum(nil)),
	}, nil
}

// CarrySBOMLabels adds to labels the SBOM labels of the input artifact's
// registry metadata, when it has them. Across the plugin RPC the metadata
// arrives as a map (msgpack), in process as *registryimage.Image.
func CarrySBOMLabels(in packersdk.Artifact, labels map[string]interface{}) {
	if in == nil {
		return
	}
	got := registryLabels(in.State(registryimage.ArtifactStateURI))
	for _, k := range SBOMLabels {
		if v, ok := got[k]; ok {
			labels[k] = v
		}
	}
}

// ReplaceSBOMLabels are the labels of the input artifact's registry
// metadata (none when it has none) with the SBOM labels replaced by
// sbomLabels (LabelsOf of a re-read SBOM): for a post-processor that
// changed what the SBOM was read from and wrote it again.
func ReplaceSBOMLabels(in packersdk.Artifact, sbomLabels map[string]interface{}) map[string]interface{} {
	labels := map[string]interface{}{}
	if in != nil {
		for k, v := range registryLabels(in.State(registryimage.ArtifactStateURI)) {
			labels[k] = v
		}
	}
	for _, k := range SBOMLabels {
		delete(labels, k)
		if v, ok := sbomLabels[k]; ok {
			labels[k] = v
		}
	}
	return labels
}

// registryLabels reads the Labels of registry metadata in any of its
// shapes; nil when there are none.
func registryLabels(v interface{}) map[string]string {
	switch m := v.(type) {
	case *registryimage.Image:
		if m != nil {
			return m.Labels
		}
	case registryimage.Image:
		return m.Labels
	case map[string]interface{}:
		return stringMap(m["Labels"])
	case map[interface{}]interface{}:
		return stringMap(m["Labels"])
	}
	return nil
}

func stringMap(v interface{}) map[string]string {
	out := map[string]string{}
	switch m := v.(type) {
	case map[string]string:
		return m
	case map[string]interface{}:
		for k, x := range m {
			out[k] = asString(x)
		}
	case map[interface{}]interface{}:
		for k, x := range m {
			out[asString(k)] = asString(x)
		}
	}
	return out
}

func asString(v interface{}) string {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return fmt.Sprint(v)
}

// ChangeLines are the package changes as build output: one line per
// package, "added", "removed" or "upgraded" first, at most max lines of
// each kind, then "... and N more".
func ChangeLines(c sbom.Changes, max int) []string {
	var lines []string
	kind := func(what string, cs []sbom.Change, line func(sbom.Change) string) {
		for i, ch := range cs {
			if i == max {
				lines = append(lines, fmt.Sprintf("  ... and %d more %s", len(cs)-max, what))
				return
			}
			lines = append(lines, "  "+what+" "+line(ch))
		}
	}
	id := func(ch sbom.Change) string {
		s := ch.Name
		if ch.Arch != "" {
			s += ":" + ch.Arch
		}
		return s + " (" + ch.Manager + ")"
	}
	kind("added", c.Added, func(ch sbom.Change) string { return id(ch) + " " + ch.To })
	kind("removed", c.Removed, func(ch sbom.Change) string { return id(ch) + " " + ch.From })
	kind("upgraded", c.Upgraded, func(ch sbom.Change) string { return id(ch) + " " + ch.From + " -> " + ch.To })
	return lines
}
