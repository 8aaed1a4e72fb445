package elements

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// PkgRequest is one package an element asks for in one phase.
type PkgRequest struct{ Package, Element string }

// PkgPlan is the squashed package-installs of all elements:
// phase -> "install" / "uninstall" -> requests in element order.
type PkgPlan map[string]map[string][]PkgRequest

// SquashPackageInstalls evaluates every element's package-installs.json
// or .yaml as DIB's package-installs-squash does, with env as the
// environment (ARCH, DIB_* and the `when` variables).
func SquashPackageInstalls(els []*Element, env map[string]string) (PkgPlan, error) {
	plan := PkgPlan{}
	for _, e := range els {
		for _, ext := range []string{"json", "yaml"} {
			p := filepath.Join(e.Path, "package-installs."+ext)
			data, err := os.ReadFile(p)
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				return nil, err
			}
			var objs map[string]any
			// DIB tries JSON, then YAML, whatever the extension.
			if jerr := json.Unmarshal(data, &objs); jerr != nil {
				objs = nil
				if yerr := yaml.Unmarshal(data, &objs); yerr != nil {
					return nil, fmt.Errorf("element %s: %s: %v", e.Name, filepath.Base(p), yerr)
				}
			}
			if err := collect(plan, objs, e.Name, env); err != nil {
				return nil, fmt.Errorf("element %s: %s: %w", e.Name, filepath.Base(p), err)
			}
		}
	}
	return plan, nil
}

func collect(plan PkgPlan, objs map[string]any, element string, env map[string]string) error {
	for _, pkg := range sortedAny(objs) {
		var params []map[string]any
		switch v := objs[pkg].(type) {
		case nil:
			params = []map[string]any{{}}
		case map[string]any:
			params = []map[string]any{v}
		case []any:
			for _, p := range v {
				m, ok := p.(map[string]any)
				if !ok {
					return fmt.Errorf("package %s: a list entry is not a mapping", pkg)
				}
				params = append(params, m)
			}
		default:
			return fmt.Errorf("package %s: parameters are neither null, a mapping nor a list", pkg)
		}
		for _, p := range params {
			ok, err := wanted(pkg, element, p, env)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			phase := "install.d"
			if v, ok := p["phase"]; ok && v != nil {
				phase = fmt.Sprint(v)
			}
			installs := []string{"install"}
			if _, ok := p["uninstall"]; ok { // presence counts, not the value
				installs = []string{"uninstall"}
			}
			if _, ok := p["build-only"]; ok {
				installs = []string{"install", "uninstall"}
			}
			if plan[phase] == nil {
				plan[phase] = map[string][]PkgRequest{}
			}
			for _, in := range installs {
				plan[phase][in] = append(plan[phase][in], PkgRequest{pkg, element})
			}
		}
	}
	return nil
}

// wanted applies the filters of package-installs-squash's collect_data.
func wanted(pkg, element string, p map[string]any, env map[string]string) (bool, error) {
	if it, ok := p["installtype"]; ok && it != nil {
		def := env["DIB_DEFAULT_INSTALLTYPE"]
		if def == "" {
			def = "source"
		}
		elType, set := env["DIB_INSTALLTYPE_"+strings.ReplaceAll(element, "-", "_")]
		if !set {
			elType = def
		}
		if fmt.Sprint(it) != elType {
			return false, nil
		}
	}
	arch, hasArch := p["arch"]
	notArch, hasNot := p["not-arch"]
	hasArch = hasArch && arch != nil && fmt.Sprint(arch) != ""
	hasNot = hasNot && notArch != nil && fmt.Sprint(notArch) != ""
	if hasArch && hasNot {
		return false, fmt.Errorf("package %s: arch and not-arch both given", pkg)
	}
	if hasArch && !inList(env["ARCH"], fmt.Sprint(arch)) {
		return false, nil
	}
	if hasNot && inList(env["ARCH"], fmt.Sprint(notArch)) {
		return false, nil
	}
	if v, ok := p["dib_python_version"]; ok && v != nil && fmt.Sprint(v) != "" && fmt.Sprint(v) != env["DIB_PYTHON_VERSION"] {
		return false, nil
	}
	return when(p["when"], env)
}

// inList is _is_arch_in_list: DIB splits on commas and (because its
// strip is a no-op map) compares the pieces unstripped.
func inList(arch, list string) bool {
	for _, a := range strings.Split(list, ",") {
		if a == arch {
			return true
		}
	}
	return false
}

var whenRe = regexp.MustCompile(`^(\w+)(\s*)(=|!=)(\s*)(.*)`)

// when evaluates `when: VAR=val` / `VAR!=val`, a list being an AND; an
// unset variable is an error, as in DIB.
func when(stmt any, env map[string]string) (bool, error) {
	if stmt == nil {
		return true, nil
	}
	var list []string
	switch v := stmt.(type) {
	case []any:
		for _, s := range v {
			list = append(list, fmt.Sprint(s))
		}
	default:
		list = []string{fmt.Sprint(v)}
	}
	all := true
	for _, s := range list {
		m := whenRe.FindStringSubmatch(s)
		if m == nil {
			return false, fmt.Errorf("malformed when: %q", s)
		}
		// Python's re.match lets (\w+) stop before "!=": "VAR!=x" is
		// VAR, "!=", x; Go's leftmost-first gives the same.
		val, set := env[m[1]]
		if !set {
			return false, fmt.Errorf("when: %q: the variable %s is not set", s, m[1])
		}
		if (m[3] == "=") != (m[5] == val) {
			all = false
		}
	}
	return all, nil
}

func sortedAny(m map[string]any) []string {
	s := map[string]bool{}
	for k := range m {
		s[k] = true
	}
	return sortedKeys(s)
}

// Packages maps a phase's requests through each element's pkg-map (as
// package-installs-v2 does with `pkg-map --missing-ok`), without
// duplicates, in request order.
func (p PkgPlan) Packages(phase, install string, maps map[string]*PkgMap, distro, release string) []string {
	seen := map[string]bool{}
	var out []string
	byElement := map[string][]string{}
	var order []string
	for _, r := range p[phase][install] {
		if _, ok := byElement[r.Element]; !ok {
			order = append(order, r.Element)
		}
		byElement[r.Element] = append(byElement[r.Element], r.Package)
	}
	for _, el := range order {
		for _, n := range maps[el].Map(distro, release, byElement[el]) {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}
