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
	ok := 0
	for _, n := range names {
		_, err := Expand([]string{n}, all, ExpandOptions{Provided: Provided(), Paths: []string{dibElements}})
		switch {
		case err == nil:
			ok++
		case strings.Contains(err.Error(), "cycle"):
			t.Errorf("%s: %v", n, err)
		case strings.Contains(err.Error(), `"operating-system", already provided by the base image`):
		case strings.Contains(err.Error(), "not found"):
			// deps on elements outside DIB's set (ensure-venv deps etc.)
			t.Logf("%s: %v", n, err)
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
