package sbom

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// dpkg's database (dpkg(1) FILES, deb822(5) for the syntax).
const (
	dpkgStatus  = "/var/lib/dpkg/status"
	dpkgUpdates = "/var/lib/dpkg/updates"
)

// dpkgStates are the package states of dpkg(1) ("Package states"), the
// third word of a Status: field.
var dpkgStates = map[string]bool{
	"not-installed": true, "config-files": true, "half-installed": true, "unpacked": true,
	"half-configured": true, "triggers-awaited": true, "triggers-pending": true, "installed": true,
}

// stanza is one deb822 paragraph: field names folded to lower case, as
// deb822(5) makes them case-insensitive; line is where it starts.
type stanza struct {
	fields map[string]string
	line   int
}

// parseDeb822 reads deb822(5) paragraphs. A line that is neither a field
// nor a continuation spoils its paragraph, which is returned in bad (with
// the first problem) rather than guessed at.
func parseDeb822(data []byte) (good []stanza, bad []string) {
	for _, p := range splitParagraphs(data) {
		s := stanza{fields: map[string]string{}, line: p.start}
		problem := p.truncated
		last := ""
		for i, line := range p.lines {
			if problem != "" {
				break
			}
			n := p.start + i
			if line[0] == ' ' || line[0] == '\t' {
				if last == "" {
					problem = fmt.Sprintf("line %d: continuation line without a field", n)
					continue
				}
				s.fields[last] += "\n" + strings.TrimSpace(string(line))
				continue
			}
			name, value, ok := bytes.Cut(line, []byte{':'})
			if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
				problem = fmt.Sprintf("line %d: not a field: %q", n, clip(string(line)))
				continue
			}
			last = strings.ToLower(string(name))
			if _, dup := s.fields[last]; dup {
				problem = fmt.Sprintf("line %d: field %s twice in one paragraph", n, name)
			}
			s.fields[last] = strings.TrimSpace(string(value))
		}
		if problem != "" {
			bad = append(bad, problem)
			continue
		}
		good = append(good, s)
	}
	return good, bad
}

// paragraph is a run of non-blank lines; start is the first one's number
// (from 1). truncated says why the last paragraph of a file that ends
// inside a line cannot be trusted; "" otherwise.
type paragraph struct {
	start     int
	lines     [][]byte
	truncated string
}

// splitParagraphs splits the blank-line separated paragraphs of deb822(5)
// and of apk's installed database.
func splitParagraphs(data []byte) []paragraph {
	var out []paragraph
	cut := len(data) > 0 && data[len(data)-1] != '\n'
	open := false
	n := 0
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		n++
		if len(bytes.TrimSpace(line)) == 0 {
			open = false
			continue
		}
		if !open {
			out = append(out, paragraph{start: n})
			open = true
		}
		out[len(out)-1].lines = append(out[len(out)-1].lines, line)
	}
	if cut && open {
		out[len(out)-1].truncated = fmt.Sprintf("line %d: the file ends inside a line (truncated?)", n)
	}
	return out
}

// clip shortens a quoted excerpt of a bad line.
func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// readDpkg lists what `dpkg-query -W` lists: every package of the status
// file whose state is not not-installed (dpkg-query(1): -W is --list with
// a format, and --list without a pattern excludes only not-installed),
// with the journal of /var/lib/dpkg/updates applied on top, as dpkg-query
// does when it opens the database (dpkg(1): an interrupted run leaves its
// status changes there).
func readDpkg(r *inroot.Root) ([]Package, []string) {
	data, ok, bad := readDB(r, dpkgStatus)
	if !ok {
		return nil, nonEmpty(bad)
	}
	// One line per file: what each file's paragraphs and packages lacked.
	var files []string
	problems := map[string][]string{}
	problem := func(file, p string) {
		if problems[file] == nil {
			files = append(files, file)
		}
		problems[file] = append(problems[file], p)
	}
	type key struct{ name, arch string }
	type entry struct {
		stanza
		file string
	}
	byKey := map[key]entry{}
	var order []key
	add := func(file string, data []byte) {
		good, bad := parseDeb822(data)
		for _, p := range bad {
			problem(file, p)
		}
		for _, s := range good {
			name := s.fields["package"]
			if name == "" {
				problem(file, fmt.Sprintf("line %d: paragraph without Package", s.line))
				continue
			}
			k := key{name, s.fields["architecture"]}
			if _, seen := byKey[k]; !seen {
				order = append(order, k)
			}
			byKey[k] = entry{s, file}
		}
	}
	add(dpkgStatus, data)
	var incomplete []string
	for _, u := range dpkgJournal(r, &incomplete) {
		if d, ok, bad := readDB(r, u); ok {
			add(u, d)
		} else if bad != "" {
			incomplete = append(incomplete, bad)
		}
	}
	var pkgs []Package
	for _, k := range order {
		s := byKey[k]
		status := strings.Fields(s.fields["status"])
		if len(status) != 3 || !dpkgStates[status[2]] {
			problem(s.file, fmt.Sprintf("line %d: package %s: bad Status %q", s.line, k.name, s.fields["status"]))
			continue
		}
		if status[2] == "not-installed" {
			continue
		}
		v := s.fields["version"]
		if v == "" {
			problem(s.file, fmt.Sprintf("line %d: package %s: no Version", s.line, k.name))
			continue
		}
		src, _, _ := strings.Cut(s.fields["source"], " ")
		if src == "" {
			src = k.name
		}
		state := status[2]
		if state == "installed" {
			state = ""
		}
		pkgs = append(pkgs, Package{Name: k.name, Version: v, Arch: k.arch, Source: src, Manager: Dpkg, Supplier: s.fields["maintainer"], State: state})
	}
	for _, f := range files {
		incomplete = append(incomplete, fmt.Sprintf("%s: %d paragraph(s) skipped; %s", f, len(problems[f]), problems[f][0]))
	}
	return pkgs, incomplete
}

// dpkgJournal lists the files of /var/lib/dpkg/updates that dpkg applies:
// names made of digits only (dpkg's IMPORTANTFMT "%04d"), in order.
func dpkgJournal(r *inroot.Root, incomplete *[]string) []string {
	there, _ := r.Exists(dpkgUpdates)
	if !there {
		return nil
	}
	es, err := readDir(r, dpkgUpdates)
	if err != nil {
		*incomplete = append(*incomplete, fmt.Sprintf("%s: %v", dpkgUpdates, unwrapPath(err)))
		return nil
	}
	var out []string
	for _, e := range es {
		if n := e.Name(); n != "" && strings.Trim(n, "0123456789") == "" {
			out = append(out, dpkgUpdates+"/"+n)
		}
	}
	slices.Sort(out) // same width (%04d): lexical is numeric
	return out
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
