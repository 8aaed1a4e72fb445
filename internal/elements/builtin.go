package elements

import (
	"embed"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// The built-in elements stand in for DIB's helper elements, whose Python
// would need an interpreter in the image or on the host; the helpers are
// the commands elements call in the image.
//
//go:embed builtin helpers
var embedded embed.FS

// BaseImage names who provides operating-system: the image already is one.
const BaseImage = "the base image"

// BuiltinNames are the element names this package provides itself; an
// element-deps line naming one is satisfied without looking on the path.
var BuiltinNames = []string{
	"dib-init-system", "dib-run-parts", "install-bin", "install-static",
	"package-installs", "pkg-map", "source-repositories",
}

// Provided is the provided set Expand starts from: operating-system by the
// base image, the built-in elements by this package.
func Provided() map[string]string {
	m := map[string]string{"operating-system": BaseImage}
	for _, n := range BuiltinNames {
		m[n] = "imagefactory-elements (built in)"
	}
	return m
}

// writeBuiltins extracts the built-in elements under dir and returns them
// in a fixed order. Files in the phase directories are executable.
func writeBuiltins(dir string) ([]*Element, error) {
	var out []*Element
	for _, name := range BuiltinNames {
		root := path.Join("builtin", name)
		dst := filepath.Join(dir, name)
		if err := extract(root, dst); err != nil {
			return nil, err
		}
		out = append(out, &Element{Name: name, Path: dst, Builtin: true})
	}
	return out, nil
}

// writeHelpers extracts the in-image helpers into dir, executable.
func writeHelpers(dir string) error { return extract("helpers", dir) }

func extract(root, dst string) error {
	return fs.WalkDir(embedded, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := embedded.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o755)
		if path.Base(p) == "README" {
			mode = 0o644
		}
		return os.WriteFile(target, data, mode)
	})
}

// helperNames lists the helpers (for docs and tests).
func helperNames() []string {
	ents, _ := embedded.ReadDir("helpers")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}
