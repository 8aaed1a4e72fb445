// Package scrub is an offline virt-sysprep: it removes or resets the
// per-machine state of a Linux image (logs, host keys, machine-id, leases,
// histories, caches...) so that clones made from it do not share identity
// or secrets.
//
// It works on an image root that is already mounted, and touches it only
// through *inroot.Root: the image is hostile (DESIGN.md #3), and a symlink
// such as /var/log -> /etc or /root/.ssh -> / must never make an operation
// reach a host file. Symlinks met at the end of a path are removed or
// replaced, never followed; symlinks in the middle of a path resolve inside
// the image root.
//
// KeepPaths is an option, not an operation: its globs protect paths (and
// what is beneath them) from every operation. RemovePaths feeds the
// remove-paths operation.
//
// Operations that virt-sysprep has and this package does not:
//   - customize, script: they run programs in the guest; the builder's
//     provisioners already do that.
//   - lvm-uuids, fs-uuids: they change block-device and filesystem metadata,
//     not files; they need the devices, not the mounted tree.
package scrub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// Operation is one named scrubbing step.
type Operation struct {
	Name        string
	Description string
	Default     bool     // part of "defaults"
	Families    []Family // the families it concerns; none: every image
	Run         func(*Context) error
}

// Options tunes the operations.
type Options struct {
	// RemovePaths are globs (image-absolute, path.Match syntax per
	// component) removed, recursively, by the remove-paths operation.
	RemovePaths []string
	// KeepPaths are globs protecting the paths they match, and everything
	// beneath them, from every operation.
	KeepPaths []string
	// Hostname is written to /etc/hostname by the hostname operation
	// ("localhost" when empty).
	Hostname string
	// FirstbootScript is a shell script run once at first boot (installed
	// by the firstboot operation).
	FirstbootScript string
}

// Context is what an operation works with.
type Context struct {
	Root    *inroot.Root
	Report  *Report
	Options Options

	ctx      context.Context
	op       string          // the operation running, for the report
	selected map[string]bool // every operation of this Run
	netMACs  map[string]bool // the factory's NIC addresses (factoryMACs), read once
}

// Selected reports whether the named operation is part of this run.
func (c *Context) Selected(name string) bool { return c.selected[name] }

// Action is what happened to a path.
type Action string

// Actions in a Report.
const (
	Removed Action = "removed"
	Changed Action = "changed"
	Created Action = "created"
)

// Change is one file removed, changed or created.
type Change struct {
	Op     string `json:"op"`
	Path   string `json:"path"`
	Action Action `json:"action"`
}

// Report lists every change, in order.
type Report struct {
	Changes []Change `json:"changes"`
}

func (r *Report) add(op, path string, a Action) {
	r.Changes = append(r.Changes, Change{Op: op, Path: path, Action: a})
}

// MarshalJSON keeps "changes" a list even when empty.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report
	p := plain(r)
	if p.Changes == nil {
		p.Changes = []Change{}
	}
	return json.Marshal(p)
}

// Summary is a short, one-screen account: counts per operation, with no
// trailing newline.
func (r *Report) Summary() string {
	type counts struct{ removed, changed, created int }
	per := map[string]*counts{}
	var names []string
	for _, c := range r.Changes {
		n := per[c.Op]
		if n == nil {
			n = &counts{}
			per[c.Op] = n
			names = append(names, c.Op)
		}
		switch c.Action {
		case Removed:
			n.removed++
		case Changed:
			n.changed++
		case Created:
			n.created++
		}
	}
	sort.Strings(names)
	var b strings.Builder
	if len(r.Changes) == 0 {
		return "scrub: nothing to change: the image holds nothing the operations remove or reset"
	}
	fmt.Fprintf(&b, "scrub: %s by %s:", plural(len(r.Changes), "change"), plural(len(names), "operation"))
	for _, name := range names {
		n := per[name]
		fmt.Fprintf(&b, "\n  %-24s %4d removed %4d changed %4d created", name, n.removed, n.changed, n.created)
	}
	return b.String()
}

// Operations returns every operation, sorted by name.
func Operations() []Operation {
	ops := withFamilies(append(operations(), familyOps()...))
	sort.Slice(ops, func(i, j int) bool { return ops[i].Name < ops[j].Name })
	return ops
}

// Select turns a virt-sysprep --operations style spec into operations,
// sorted by name. Items are applied in order, and each may hold several
// comma-separated words: "defaults" adds every default operation, "all"
// adds every operation, "name" or "+name" adds one, "-name" removes one
// ("-defaults" and "-all" remove those sets). An empty spec means
// "defaults".
func Select(spec []string) ([]Operation, error) {
	all := Operations()
	byName := map[string]Operation{}
	for _, op := range all {
		byName[op.Name] = op
	}
	chosen := map[string]bool{}
	words := 0
	for _, item := range spec {
		for _, w := range strings.Split(item, ",") {
			w = strings.TrimSpace(w)
			if w == "" {
				continue
			}
			words++
			add := true
			switch w[0] {
			case '-':
				add, w = false, w[1:]
			case '+':
				w = w[1:]
			}
			var names []string
			switch w {
			case "defaults":
				for _, op := range all {
					if op.Default {
						names = append(names, op.Name)
					}
				}
			case "all":
				for _, op := range all {
					names = append(names, op.Name)
				}
			default:
				if _, ok := byName[w]; !ok {
					valid := make([]string, 0, len(all))
					for _, op := range all {
						valid = append(valid, op.Name)
					}
					return nil, fmt.Errorf("unknown scrub operation %q in %q; valid: defaults, all, %s", w, item, strings.Join(valid, ", "))
				}
				names = []string{w}
			}
			for _, n := range names {
				if add {
					chosen[n] = true
				} else {
					delete(chosen, n)
				}
			}
		}
	}
	if words == 0 {
		return Select([]string{"defaults"})
	}
	var out []Operation
	for _, op := range all {
		if chosen[op.Name] {
			out = append(out, op)
		}
	}
	return out, nil
}

// Run applies ops, in the given order, to the image at root. It goes on
// after a failing operation (a half-scrubbed image is still better scrubbed
// than not) and returns every failure joined, each naming its operation; it
// stops between operations when ctx is cancelled. The report lists what was
// done, failures or not.
//
// On a full filesystem the operations that write fail at first; the blocks
// that the removing ones freed are usable only once the filesystem commits
// them, so those operations are run once more after a sync. Every write is
// atomic (a new file renamed over the old), so a failed one changed nothing.
func Run(ctx context.Context, root *inroot.Root, ops []Operation, opts Options) (*Report, error) {
	c := &Context{Root: root, Options: opts, Report: &Report{}, ctx: ctx}
	for _, g := range append(append([]string{}, opts.RemovePaths...), opts.KeepPaths...) {
		if err := checkGlob(g); err != nil {
			return c.Report, err
		}
	}
	c.selected = map[string]bool{}
	for _, op := range ops {
		c.selected[op.Name] = true
	}
	errs, full := c.runAll(ops)
	if len(full) > 0 && ctx.Err() == nil {
		if err := root.SyncFS(); err != nil {
			errs = append(errs, err)
		}
		again, stillFull := c.runAll(full)
		errs = append(errs, again...)
		if len(stillFull) > 0 {
			names := make([]string, len(stillFull))
			for i, op := range stillFull {
				names[i] = op.Name
			}
			errs = append([]error{fmt.Errorf("the image's filesystem is full: %s could not write even after the other operations freed space; make room in the image (remove_paths, or a larger disk_size)",
				strings.Join(names, ", "))}, errs...)
		}
	}
	c.op = ""
	return c.Report, errors.Join(errs...)
}

// runAll runs ops in order and returns the failures other than a full
// filesystem, and the operations that failed for lack of space.
func (c *Context) runAll(ops []Operation) (errs []error, full []Operation) {
	for _, op := range ops {
		if err := c.ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("scrub stopped before %s: %w", op.Name, err))
			break
		}
		c.op = op.Name
		switch err := op.Run(c); {
		case errors.Is(err, syscall.ENOSPC):
			full = append(full, op)
		case err != nil:
			errs = append(errs, fmt.Errorf("scrub %s: %w", op.Name, err))
		}
	}
	return errs, full
}

// DocsTable is the markdown table of every operation, generated from
// Operations so the documentation cannot drift from the code.
func DocsTable() string {
	var b strings.Builder
	b.WriteString("| Operation | Default | Families | Description |\n|---|---|---|---|\n")
	for _, op := range Operations() {
		def := "no"
		if op.Default {
			def = "yes"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", op.Name, def, familiesCell(op.Families), strings.ReplaceAll(op.Description, "|", `\|`))
	}
	return b.String()
}

// plural is "1 change", "2 changes".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
