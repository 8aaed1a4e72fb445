package elements

import (
	"path/filepath"
	"testing"
)

// TestPrepareElementsPath: packer validate refuses an elements_path entry
// that cannot be read, naming it as the user wrote it.
func TestPrepareElementsPath(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-elements")
	p := &Provisioner{}
	err := p.Prepare(map[string]interface{}{"elements": []string{"base"}, "elements_path": []string{t.TempDir(), missing}})
	want := "imagefactory-elements: elements_path[1] " + missing + " cannot be read (no such file or directory); give a directory of elements"
	if err == nil || err.Error() != want {
		t.Errorf("Prepare = %v, want %q", err, want)
	}
}
