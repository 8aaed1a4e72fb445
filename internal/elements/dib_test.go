package elements

import (
	"os"
	"sort"
	"strings"
	"testing"
)

const dibElements = "/usr/lib/python3/dist-packages/diskimage_builder/elements"

// TestDIBElementSet expands every element of DIB's own set (Debian's
// python3-diskimage-builder, a test dependency): none may report a cycle,
// and the OS elements must clash with the base image's operating-system.
func TestDIBElementSet(t *testing.T) {
	if _, err := os.Stat(dibElements); err != nil {
		t.Fatalf("DIB's elements (python3-diskimage-builder, scripts/install-deps.sh): %v", err)
	}
	all, _, err := FindAll([]string{dibElements})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	// Elements whose element-deps name one Debian's package does not ship
	// (python3-diskimage-builder 3.13.0-2: deploy-kexec/element-deps
	// lists "deploy", vm/element-deps "block-device"): each must fail
	// naming exactly that one, and no other element may miss a dependency.
	missing := map[string]string{"deploy-kexec": "deploy", "vm": "block-device"}
	ok := 0
	for _, n := range names {
		_, err := Expand([]string{n}, all, ExpandOptions{Provided: Provided(), Paths: []string{dibElements}})
		switch {
		case err == nil:
			ok++
			if dep, want := missing[n]; want {
				t.Errorf("%s expands, but it needs %q, which DIB's set lacks", n, dep)
			}
		case strings.Contains(err.Error(), "cycle"):
			t.Errorf("%s: %v", n, err)
		case strings.Contains(err.Error(), `"operating-system", already provided by the base image`):
		case missing[n] != "" && strings.Contains(err.Error(), `element "`+missing[n]+`" not found`):
		default:
			t.Errorf("%s: %v", n, err)
		}
	}
	for _, n := range []string{"debian", "ubuntu", "centos"} {
		if _, err := Expand([]string{n}, all, ExpandOptions{Provided: Provided()}); err == nil || !strings.Contains(err.Error(), "operating-system") {
			t.Errorf("%s on an existing OS: %v", n, err)
		}
	}
	if ok < 50 {
		t.Errorf("only %d of DIB's elements expand", ok)
	}
}
