package boottest

import (
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// The boot test's artifact is its input (files, ID) and says what it is,
// not the input's line a second time.
func TestTestedArtifact(t *testing.T) {
	in := &packersdk.MockArtifact{FilesValue: []string{"/out/web.qcow2"}, IdValue: "web"}
	a := &Tested{Artifact: in, Console: "/out/web.console.log"}
	if a.Id() != "web" || len(a.Files()) != 1 || a.Files()[0] != "/out/web.qcow2" {
		t.Errorf("Id %q, Files %v: not the input's", a.Id(), a.Files())
	}
	if got, want := a.String(), "boot test passed (console web.console.log) on the image above"; got != want || got == in.String() {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
