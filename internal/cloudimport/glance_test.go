package cloudimport

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/glancetest"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/serve"
)

// TestGlanceWebDownload imports a served file into a real glance-api: its
// hash algorithm is found with a probe image; the image ends active with
// our hash; a wrong checksum fails and deletes it;
// an unreachable URL fails with Glance's own message and deletes it.
func TestGlanceWebDownload(t *testing.T) {
	if err := glancetest.Available(); err != nil {
		t.Skipf("glance-api is not available (scripts/install-deps.sh installs it): %v", err)
	}
	servePort, _ := glancetest.FreePort()
	deadPort, _ := glancetest.FreePort()
	g, err := glancetest.Start(t.TempDir(), "tok-"+t.Name(), []int{servePort, deadPort})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	defer func() {
		if t.Failed() {
			t.Log(g.Tail())
		}
	}()

	file := filepath.Join(t.TempDir(), "disk.raw")
	data := []byte(strings.Repeat("imagefactory ", 100000))
	os.WriteFile(file, data, 0o644)
	os.Truncate(file, 32<<20) // a hole at the end
	full, _ := os.ReadFile(file)
	sum := sha512.Sum512(full)
	srv, err := serve.Start(file, serve.Options{Address: "127.0.0.1:" + itoa(servePort)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	api := &Glance{Auth: GlanceAuth{Endpoint: g.Endpoint, Token: g.Token}, Client: NewClient(false, 2, func(s string) { t.Log(s) })}
	spec := Spec{Name: "t", DiskFormat: "raw", Properties: map[string]string{"os_distro": "debian"}, Tags: []string{"factory"}}
	opts := Options{Timeout: 2 * time.Minute, PollInterval: 300 * time.Millisecond, Say: func(s string) { t.Log(s) }}
	ctx := context.Background()

	// The algorithm, from a one-byte probe image that is deleted (the
	// image count at the end says so).
	if algo, err := api.HashAlgo(ctx); err != nil || algo != "sha512" {
		t.Fatalf("HashAlgo = %q, %v; want Glance's default sha512", algo, err)
	}

	good := Source{URL: srv.URL(), Checksum: Checksum{"sha512", hex.EncodeToString(sum[:])}}
	imp, err := Run(ctx, api, spec, good, opts)
	if err != nil {
		t.Fatal(err)
	}
	img, err := api.image(ctx, imp.ImageID)
	if err != nil || img.Status != "active" || img.Size != 32<<20 {
		t.Fatalf("image %+v, %v", img, err)
	}

	bad := good
	bad.Checksum.Value = strings.Repeat("0", 128)
	imp, err = Run(ctx, api, spec, bad, opts)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("wrong checksum: %v", err)
	}
	if _, err := api.image(ctx, imp.ImageID); !IsNotFound(err) {
		t.Errorf("the mismatching image %s is still there: %v", imp.ImageID, err)
	}

	dead := Source{URL: "http://127.0.0.1:" + itoa(deadPort) + "/nothing.raw", Checksum: good.Checksum}
	imp, err = Run(ctx, api, spec, dead, opts)
	if err == nil || !strings.Contains(err.Error(), "import failed") {
		t.Fatalf("unreachable URL: %v", err)
	}
	t.Logf("unreachable URL: %v", err)
	if _, err := api.image(ctx, imp.ImageID); !IsNotFound(err) {
		t.Errorf("the failed image %s is still there: %v", imp.ImageID, err)
	}
	imgs, _ := g.Images(ctx)
	if len(imgs) != 1 {
		t.Errorf("Glance holds %d images, want the 1 good one: %+v", len(imgs), imgs)
	}
}
