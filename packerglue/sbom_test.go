package packerglue

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"
	sdkrpc "github.com/hashicorp/packer-plugin-sdk/rpc"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
)

// labelled is an artifact whose registry metadata carries SBOM labels.
type labelled struct{ packersdk.MockArtifact }

func (a *labelled) State(name string) interface{} {
	if name != registryimage.ArtifactStateURI {
		return nil
	}
	return &registryimage.Image{ImageID: "i", ProviderName: "imagefactory", Labels: map[string]string{
		"os": "debian", "os_version": "12", "kernel": "6.1.0-1-amd64,6.1.0-2-amd64",
		"package_count": "3", "sbom_sha256": "ab12", "format": "raw",
	}}
}

// overRPC is a through Packer's plugin RPC (msgpack), as a post-processor
// in its own plugin process sees its input.
func overRPC(t *testing.T, a packersdk.Artifact) packersdk.Artifact {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := sdkrpc.NewServer(<-accepted)
	if err != nil {
		t.Fatal(err)
	}
	if err := server.RegisterArtifact(a); err != nil {
		t.Fatal(err)
	}
	go server.Serve()
	client, err := sdkrpc.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client.Artifact()
}

// TestCarrySBOMLabels: the SBOM labels, and only they, come from the
// input's registry metadata, in process and through the plugin RPC.
// ReplaceSBOMLabels keeps the input's other labels and takes the SBOM
// labels of a re-read SBOM instead of the input's.
func TestCarrySBOMLabels(t *testing.T) {
	want := map[string]interface{}{
		"os": "debian", "os_version": "12", "kernel": "6.1.0-1-amd64,6.1.0-2-amd64",
		"package_count": "3", "sbom_sha256": "ab12", "api": "glance",
	}
	fresh := map[string]interface{}{
		"os": "", "os_version": "", "kernel": "6.1.0-2-amd64", "package_count": "2", "sbom_sha256": "cd34",
	}
	replaced := map[string]interface{}{"format": "raw"}
	for k, v := range fresh {
		replaced[k] = v
	}
	for _, tc := range []struct {
		name     string
		in       packersdk.Artifact
		want     map[string]interface{}
		replaced map[string]interface{}
	}{
		{"in process", &labelled{}, want, replaced},
		{"over RPC", overRPC(t, &labelled{}), want, replaced},
		{"no metadata", &packersdk.MockArtifact{}, map[string]interface{}{"api": "glance"}, fresh},
		{"no input", nil, map[string]interface{}{"api": "glance"}, fresh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]interface{}{"api": "glance"}
			CarrySBOMLabels(tc.in, got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("labels %v, want %v", got, tc.want)
			}
			if got := ReplaceSBOMLabels(tc.in, fresh); !reflect.DeepEqual(got, tc.replaced) {
				t.Errorf("replaced: labels %v, want %v", got, tc.replaced)
			}
		})
	}
}

// TestChangeLines: one line per package, each kind capped.
func TestChangeLines(t *testing.T) {
	c := sbom.Changes{
		Added: []sbom.Change{
			{Manager: "dpkg", Name: "a", Arch: "amd64", To: "1"},
			{Manager: "dpkg", Name: "b", Arch: "all", To: "2"},
			{Manager: "dpkg", Name: "c", To: "3"},
		},
		Removed:  []sbom.Change{{Manager: "rpm", Name: "r", Arch: "noarch", From: "1.0-1"}},
		Upgraded: []sbom.Change{{Manager: "apk", Name: "u", Arch: "x86_64", From: "1", To: "2"}},
	}
	want := []string{
		"  added a:amd64 (dpkg) 1",
		"  added b:all (dpkg) 2",
		"  ... and 1 more added",
		"  removed r:noarch (rpm) 1.0-1",
		"  upgraded u:x86_64 (apk) 1 -> 2",
	}
	if got := ChangeLines(c, 2); !reflect.DeepEqual(got, want) {
		t.Errorf("ChangeLines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := ChangeLines(sbom.Changes{}, 2); len(got) != 0 {
		t.Errorf("no changes: %v", got)
	}
}

// TestCopySBOM: the copy lands whole under <image>.spdx.json, named after
// its image (it kept the builder's "a.raw" in name and namespace), with its
// sha256 returned, and leaves no temporary file; a missing input names it,
// and so does one that is not an SPDX document.
func TestCopySBOM(t *testing.T) {
	dir := t.TempDir()
	src := repro.New(1767225600, "web")
	inv := &sbom.Inventory{OS: sbom.OS{ID: "debian", VersionID: "12", Name: "Debian GNU/Linux"}, Packages: []sbom.Package{{Name: "bash", Version: "5.2.15-2+b2", Arch: "amd64", Manager: sbom.Dpkg}}}
	doc, err := inv.SPDX("a.raw", src)
	if err != nil {
		t.Fatal(err)
	}
	from := filepath.Join(dir, "a.raw.spdx.json")
	if err := os.WriteFile(from, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	to, sum, err := CopySBOM(from, filepath.Join(dir, "a.qcow2"), repro.New(1767225600, "web"))
	if err != nil || to != filepath.Join(dir, "a.qcow2.spdx.json") {
		t.Fatalf("CopySBOM: %q, %v", to, err)
	}
	want, _ := inv.SPDX("a.qcow2", src)
	got, _ := os.ReadFile(to)
	if string(got) != string(want) {
		t.Errorf("the copy is not the document of a.qcow2:\n%s", got)
	}
	if h := sha256.Sum256(got); sum != hex.EncodeToString(h[:]) {
		t.Errorf("sum %s, the file's %x", sum, h)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, ".*")); len(names) > 0 {
		t.Errorf("temporary files left: %v", names)
	}
	if _, _, err := CopySBOM(filepath.Join(dir, "missing.spdx.json"), filepath.Join(dir, "b.qcow2"), nil); err == nil || !strings.Contains(err.Error(), "missing.spdx.json") {
		t.Errorf("missing input: %v", err)
	}
	bad := filepath.Join(dir, "bad.raw.spdx.json")
	os.WriteFile(bad, []byte("{"), 0o644)
	if _, _, err := CopySBOM(bad, filepath.Join(dir, "bad.qcow2"), nil); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("broken input: %v", err)
	}
	if got := FindSBOM([]string{"x.raw", "x.raw.sha256", from}); got != from {
		t.Errorf("FindSBOM: %q", got)
	}
}
