package imagefactory

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// runBaseImage runs stepBaseImage alone with Packer's cache in a fresh
// directory, returning the state, what the ui printed and the cache dir.
func runBaseImage(t *testing.T, base, checksum string) (multistep.StepAction, multistep.StateBag, string, string) {
	t.Helper()
	cache := t.TempDir()
	t.Setenv("PACKER_CACHE_DIR", cache)
	var out bytes.Buffer
	state := new(multistep.BasicStateBag)
	state.Put("ui", packersdk.Ui(progressless{&packersdk.BasicUi{Reader: strings.NewReader(""), Writer: &out, ErrorWriter: &out}}))
	state.Put("config", &Config{BaseImage: base, BaseImageChecksum: checksum})
	action := (&stepBaseImage{}).Run(context.Background(), state)
	return action, state, out.String(), cache
}

// progressless is a BasicUi without a progress bar (its own needs a
// terminal).
type progressless struct{ *packersdk.BasicUi }

func (progressless) TrackProgress(_ string, _, _ int64, stream io.ReadCloser) io.ReadCloser {
	return stream
}

func cacheEntries(t *testing.T, cache string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	return names
}

// TestBaseImageLocal: a local base image is used where it is, with no
// entry in Packer's cache, and its checksum is still verified.
func TestBaseImageLocal(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw.xz")
	if err := os.WriteFile(base, []byte("not compressed, but named so"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256([]byte("not compressed, but named so")))
	for _, tc := range []struct{ name, base, checksum, wantErr string }{
		{"path", base, "", ""},
		{"file URL", "file://" + base, "", ""},
		{"sha256", base, "sha256:" + sum, ""},
		{"bare hex", base, sum, ""},
		{"checksum file", base, "file:" + writeFile(t, dir, "SHA256SUMS", sum+"  base.raw.xz\n"), ""},
		{"none", base, "none", ""},
		{"wrong sha256", base, "sha256:" + strings.Repeat("0", 64),
			"base_image " + base + " has sha256 " + sum + ", not the " + strings.Repeat("0", 64) + " of base_image_checksum: check that the checksum is the one published for this file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			action, state, out, cache := runBaseImage(t, tc.base, tc.checksum)
			if tc.wantErr != "" {
				err, _ := state.Get("error").(error)
				if action != multistep.ActionHalt || err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if action != multistep.ActionContinue {
				t.Fatalf("halted: %v\n%s", state.Get("error"), out)
			}
			if got := state.Get(stateBaseImagePath); got != base {
				t.Errorf("base image path = %v, want the file itself, %s", got, base)
			}
			if n := cacheEntries(t, cache); len(n) != 0 {
				t.Errorf("Packer's cache holds %v for a local base image", n)
			}
			if strings.Count(out, base) != 1 {
				t.Errorf("the output names the base image %d times, want once:\n%s", strings.Count(out, base), out)
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBaseImageURL: a URL is downloaded once into the cache, compressed
// as served (no dense decompressed copy), and a failure is one sentence
// naming the URL, what failed and what to check.
func TestBaseImageURL(t *testing.T) {
	body := bytes.Repeat([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, 1000) // an xz magic: go-getter would decompress *.xz
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/base.raw.xz" {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	sum := fmt.Sprintf("sha256:%x", sha256.Sum256(body))

	t.Run("downloaded as served", func(t *testing.T) {
		action, state, out, cache := runBaseImage(t, srv.URL+"/base.raw.xz", sum)
		if action != multistep.ActionContinue {
			t.Fatalf("halted: %v\n%s", state.Get("error"), out)
		}
		got, err := os.ReadFile(state.Get(stateBaseImagePath).(string))
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("the download is not the file served (%d bytes, %v)", len(got), err)
		}
		if n := strings.Count(out, "Trying "); n != 1 {
			t.Errorf("%d Trying lines, want 1:\n%s", n, out)
		}
		if strings.Contains(out, "archive=false") {
			t.Errorf("the output shows the URL with archive=false:\n%s", out)
		}
		// One result line: the URL as given, the time, the size with its unit.
		if !regexp.MustCompile(`Downloaded base_image ` + regexp.QuoteMeta(srv.URL+"/base.raw.xz") + ` in \d+\.\d+s: 5\.86 KiB\n`).MatchString(out) {
			t.Errorf("no result line for the download:\n%s", out)
		}
		if n := cacheEntries(t, cache); len(n) != 2 { // the image and its lock file
			t.Errorf("cache holds %v, want the download and its lock", n)
		}
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/base.qcow2"
	l.Close()
	for _, tc := range []struct{ name, url, checksum, want string }{
		{"connection refused", refused, "none",
			`base_image ` + refused + ` could not be downloaded (Get "` + refused + `": dial tcp ` + strings.TrimPrefix(strings.TrimSuffix(refused, "/base.qcow2"), "http://") + `: connect: connection refused): check the URL and that its server is reachable from this host`},
		{"not found", srv.URL + "/nothing.img", "none",
			`base_image ` + srv.URL + `/nothing.img could not be downloaded (bad response code: 404): check the URL and that its server is reachable from this host`},
		{"checksum mismatch", srv.URL + "/base.raw.xz", "sha256:" + strings.Repeat("0", 64),
			`base_image ` + srv.URL + `/base.raw.xz was downloaded, but its checksum is ` + strings.TrimPrefix(sum, "sha256:") + `, not the ` + strings.Repeat("0", 64) + ` of base_image_checksum (the download was removed): check that the checksum is the one published for this file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			action, state, out, _ := runBaseImage(t, tc.url, tc.checksum)
			err, _ := state.Get("error").(error)
			if action != multistep.ActionHalt || err == nil {
				t.Fatalf("no error:\n%s", out)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tc.want)
			}
			if strings.Contains(out, "[") || strings.Contains(out, "error downloading") {
				t.Errorf("the output shows the download step's Go slice:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("the output does not show the error once:\n%s", out)
			}
		})
	}
}
