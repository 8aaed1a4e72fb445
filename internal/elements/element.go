// Package elements runs diskimage-builder (DIB) elements: discovery on an
// ELEMENTS_PATH, element-deps / element-provides expansion, the merged hooks
// tree, dib-run-parts selection and order, environment.d, and the
// package-installs / pkg-map evaluation DIB does in Python on the host.
// DIB's own code is the reference; comments name the DIB file a rule comes
// from. It knows nothing of Packer: phases run through an Exec the caller
// provides.
package elements

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Element is one element directory.
type Element struct {
	Name     string
	Path     string
	Depends  []string // element-deps, sorted
	Provides []string // element-provides, sorted
	Builtin  bool     // provided by this package, not found on the path
}

// readSet reads an element-deps / element-provides file as DIB does:
// stripped non-blank lines, as a set (element_dependencies.py
// _get_element_set). A missing file is an empty set.
func readSet(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			seen[l] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return sortedKeys(seen), nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// loadElement reads one element directory.
func loadElement(name, dir string) (*Element, error) {
	e := &Element{Name: name, Path: dir}
	var err error
	if e.Depends, err = readSet(filepath.Join(dir, "element-deps")); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	if e.Provides, err = readSet(filepath.Join(dir, "element-provides")); err != nil {
		return nil, fmt.Errorf("element %s: %w", name, err)
	}
	return e, nil
}

// Overridden records an element found twice on the path.
type Overridden struct{ Name, Winner, Loser string }

// FindAll lists every element (a directory) in the path entries; an
// earlier entry overrides a later one, as with DIB's ELEMENTS_PATH
// (_find_all_elements). A path entry that is not a directory is an error.
func FindAll(paths []string) (map[string]*Element, []Overridden, error) {
	all := map[string]*Element{}
	var over []Overridden
	for i := len(paths) - 1; i >= 0; i-- {
		p := paths[i]
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			return nil, nil, fmt.Errorf("elements_path entry %q is not a directory", p)
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, nil, fmt.Errorf("elements_path entry %q: %w", p, err)
		}
		for _, de := range ents {
			full := filepath.Join(p, de.Name())
			if fi, err := os.Stat(full); err != nil || !fi.IsDir() {
				continue // DIB: os.path.isdir follows links
			}
			real, err := filepath.EvalSymlinks(full)
			if err != nil {
				return nil, nil, err
			}
			real, _ = filepath.Abs(real)
			e, err := loadElement(de.Name(), real)
			if err != nil {
				return nil, nil, err
			}
			if old, ok := all[e.Name]; ok {
				over = append(over, Overridden{Name: e.Name, Winner: e.Path, Loser: old.Path})
			}
			all[e.Name] = e
		}
	}
	return all, over, nil
}

// ExpandOptions tunes Expand.
type ExpandOptions struct {
	// Provided are names satisfied before expansion starts, with who
	// provides them (operating-system: the base image; the built-in
	// helper elements of this package).
	Provided map[string]string
	// Exclude names elements dropped from the expansion, with their
	// dependencies unless something else pulls those in.
	Exclude []string
	// Paths is the search path, named in "not found" errors.
	Paths []string
}

// Expand resolves the user's elements to the full set, breadth first
// through element-deps, as DIB's _expand_element_dependencies: an element
// provided by another is not expanded; two providers of one name, or a
// requested element that another provides, is an error; so is a
// dependency cycle (DIB would silently accept it; here it is reported with
// its members). The result is in expansion order.
func Expand(user []string, all map[string]*Element, o ExpandOptions) ([]*Element, error) {
	excluded := map[string]bool{}
	for _, x := range o.Exclude {
		excluded[x] = true
	}
	provided := map[string]bool{}
	providedBy := map[string][]string{}
	for n, by := range o.Provided {
		provided[n] = true
		providedBy[n] = []string{by}
	}
	final := map[string]bool{}
	var order []string
	queue := []string{}
	for _, u := range user {
		if excluded[u] {
			continue
		}
		if !final[u] {
			final[u] = true
			queue = append(queue, u)
		}
	}
	var conflicts []string
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if provided[name] {
			continue
		}
		e, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("element %q not found in elements_path %s", name, strings.Join(o.Paths, ":"))
		}
		order = append(order, name)
		for _, p := range e.Provides {
			if provided[p] {
				return nil, fmt.Errorf("element %s provides %q, already provided by %s", name, p, strings.Join(providedBy[p], ", "))
			}
			providedBy[p] = append(providedBy[p], name)
			provided[p] = true
		}
		for _, d := range e.Depends {
			if excluded[d] || final[d] || provided[d] {
				continue
			}
			final[d] = true
			queue = append(queue, d)
		}
	}
	for _, u := range user {
		if provided[u] && o.Provided[u] == "" {
			conflicts = append(conflicts, fmt.Sprintf("%s (provided by %s)", u, strings.Join(providedBy[u], ", ")))
		}
	}
	if len(conflicts) > 0 {
		return nil, fmt.Errorf("requested elements already provided by another element: %s", strings.Join(conflicts, "; "))
	}
	var out []*Element
	for _, n := range order {
		if !provided[n] {
			out = append(out, all[n])
		}
	}
	if cyc := findCycle(out, all); cyc != nil {
		return nil, fmt.Errorf("element-deps cycle: %s", strings.Join(cyc, " -> "))
	}
	return out, nil
}

// findCycle returns the members of a dependency cycle among els (first
// member repeated at the end), or nil.
func findCycle(els []*Element, all map[string]*Element) []string {
	in := map[string]bool{}
	for _, e := range els {
		in[e.Name] = true
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(n string) []string
	visit = func(n string) []string {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range all[n].Depends {
			if !in[d] {
				continue
			}
			switch color[d] {
			case grey:
				for i, s := range stack {
					if s == d {
						return append(append([]string{}, stack[i:]...), d)
					}
				}
			case white:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return nil
	}
	for _, e := range els {
		if color[e.Name] == white {
			if c := visit(e.Name); c != nil {
				return c
			}
		}
	}
	return nil
}
