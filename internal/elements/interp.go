package elements

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// interpreter is what the #! line of a hook asks the kernel for: path is
// the program ("/bin/bash"), or, for `#!/usr/bin/env NAME`, name is looked
// up in the image's PATH. Both empty: no #! line (the kernel refuses it,
// and the hook's failure says so).
type interpreter struct{ path, name string }

func (i interpreter) String() string {
	if i.name != "" {
		return "/usr/bin/env " + i.name
	}
	return i.path
}

// readInterpreter reads the #! line of the hook file p (execve(2),
// "Interpreter scripts": #!interpreter [optional-arg]).
func readInterpreter(p string) (interpreter, error) {
	f, err := os.Open(p)
	if err != nil {
		return interpreter{}, err
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, 256)).ReadString('\n')
	if err != nil && err != io.EOF {
		return interpreter{}, err
	}
	if !strings.HasPrefix(line, "#!") {
		return interpreter{}, nil
	}
	fields := strings.Fields(line[2:])
	switch {
	case len(fields) == 0:
		return interpreter{}, nil
	case filepath.Base(fields[0]) == "env" && len(fields) > 1 && !strings.HasPrefix(fields[1], "-"):
		return interpreter{name: fields[1]}, nil
	}
	return interpreter{path: fields[0]}, nil
}

// hasInterpreter asks the image once per interpreter whether it has it
// (an executable file at that path, inside the image; or the name on the
// image's PATH).
func (r *Run) hasInterpreter(ctx context.Context, i interpreter) (bool, error) {
	if ok, seen := r.interps[i]; seen {
		return ok, nil
	}
	probe := "[ -x " + shellQuote(i.path) + " ]"
	if i.name != "" {
		probe = "command -v " + shellQuote(i.name) + " >/dev/null 2>&1"
	}
	code, err := r.target.RunInside(ctx, probe, io.Discard, io.Discard)
	if err != nil {
		return false, fmt.Errorf("probing the image for %s: %w", i, err)
	}
	if r.interps == nil {
		r.interps = map[interpreter]bool{}
	}
	r.interps[i] = code == 0
	return code == 0, nil
}

// checkInterpreters fails before a phase runs in the image when one of its
// hooks names an interpreter the image lacks: DIB's elements are mostly
// #!/bin/bash, and an image without bash (Alpine, busybox) would otherwise
// fail with the kernel's bare "not found" for a file that is there.
func (r *Run) checkInterpreters(ctx context.Context, ph Phase, hooks []hook) error {
	for _, h := range hooks {
		i, err := readInterpreter(filepath.Join(r.tree.Dir, ph.Name, h.name))
		if err != nil {
			return fmt.Errorf("element %s, phase %s, script %s: %w", h.element, ph.Name, h.name, err)
		}
		if i == (interpreter{}) {
			continue
		}
		ok, err := r.hasInterpreter(ctx, i)
		if err != nil {
			return err
		}
		if !ok {
			what := "bash"
			if b := filepath.Base(i.path + i.name); b != "bash" {
				what = b
			}
			return fmt.Errorf("element %s, phase %s, script %s: its interpreter #!%s is not in the image (an image without %s, "+
				"such as Alpine or a busybox image): install %s in the image before this element runs (e.g. `apk add %s` in a "+
				"shell provisioner) or write the script for /bin/sh", h.element, ph.Name, h.name, i, what, what, what)
		}
	}
	return nil
}

// phaseShell is the shell run-phase runs with in the image: bash where the
// image has it (DIB's environment.d files are bash), else /bin/sh.
func (r *Run) phaseShell(ctx context.Context) (string, error) {
	ok, err := r.hasInterpreter(ctx, interpreter{path: "/bin/bash"})
	if err != nil || !ok {
		return "/bin/sh", err
	}
	return "/bin/bash", nil
}
