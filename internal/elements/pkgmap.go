package elements

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// PkgMap is an element's pkg-map file: package names per release,
// distro, family and default (DIB's pkg-map element).
type PkgMap struct {
	Default map[string]string
	Family  map[string]map[string]string
	Distro  map[string]map[string]string
	Release map[string]map[string]map[string]string
}

// LoadPkgMap reads <element>/pkg-map; nil, nil when there is none.
func LoadPkgMap(e *Element) (*PkgMap, error) {
	data, err := os.ReadFile(filepath.Join(e.Path, "pkg-map"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var raw struct {
		Default map[string]any                       `json:"default"`
		Family  map[string]map[string]any            `json:"family"`
		Distro  map[string]map[string]any            `json:"distro"`
		Release map[string]map[string]map[string]any `json:"release"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("element %s: pkg-map: %w", e.Name, err)
	}
	m := &PkgMap{Default: str(raw.Default), Family: map[string]map[string]string{},
		Distro: map[string]map[string]string{}, Release: map[string]map[string]map[string]string{}}
	for k, v := range raw.Family {
		m.Family[k] = str(v)
	}
	for k, v := range raw.Distro {
		m.Distro[k] = str(v)
	}
	for d, rs := range raw.Release {
		m.Release[d] = map[string]map[string]string{}
		for r, v := range rs {
			m.Release[d][r] = str(v)
		}
	}
	return m, nil
}

// str renders JSON values as Python's print would for strings; null is
// the empty mapping (the package is dropped).
func str(in map[string]any) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		switch v := v.(type) {
		case nil:
			out[k] = ""
		case string:
			out[k] = v
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// OSFamily is pkg-map's os_family.
func OSFamily(distro string) string {
	switch distro {
	case "fedora", "rhel", "rhel7", "centos", "centos7":
		return "redhat"
	case "debian", "ubuntu":
		return "debian"
	case "opensuse":
		return "suse"
	case "gentoo":
		return "gentoo"
	}
	return ""
}

// Resolve merges the map for one distro and release: default, then
// family, distro and release, the most specific winning.
func (m *PkgMap) Resolve(distro, release string) map[string]string {
	out := map[string]string{}
	for k, v := range m.Default {
		out[k] = v
	}
	for _, over := range []map[string]string{m.Family[OSFamily(distro)], m.Distro[distro], m.Release[distro][majorRelease(release)]} {
		for k, v := range over {
			out[k] = v
		}
	}
	return out
}

func majorRelease(r string) string {
	if r == "8-stream" {
		return "8"
	}
	return r
}

// Map translates names as `pkg-map --missing-ok`: a mapped name replaces
// the package, an empty mapping drops it, an unmapped name passes.
func (m *PkgMap) Map(distro, release string, names []string) []string {
	if m == nil {
		return names
	}
	r := m.Resolve(distro, release)
	var out []string
	for _, n := range names {
		v, ok := r[n]
		switch {
		case !ok:
			out = append(out, n)
		case v != "":
			out = append(out, v)
		}
	}
	return out
}

// Table flattens the map for the in-image pkg-map helper, one
// "section\tkey\tname\tvalue" line per entry (release keys are
// "distro/release").
func (m *PkgMap) Table() string {
	var lines []string
	add := func(section, key string, mm map[string]string) {
		for n, v := range mm {
			lines = append(lines, strings.Join([]string{section, key, clean(n), clean(v)}, "\t"))
		}
	}
	add("default", "-", m.Default)
	for k, v := range m.Family {
		add("family", k, v)
	}
	for k, v := range m.Distro {
		add("distro", k, v)
	}
	for d, rs := range m.Release {
		for r, v := range rs {
			add("release", d+"/"+r, v)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func clean(s string) string { return strings.NewReplacer("\t", " ", "\n", " ").Replace(s) }
