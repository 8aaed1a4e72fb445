package fetchdisk_test

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/glancetest"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/serve"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// flakyProxy stands in front of Glance and answers 500 to the next `fail`
// image creations (POST /v2/images), then passes everything through.
type flakyProxy struct {
	next   http.Handler
	mu     sync.Mutex
	fail   int
	failed int
}

func (p *flakyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.fail > 0 && r.Method == "POST" && r.URL.Path == "/v2/images" {
		p.fail--
		p.failed++
		p.mu.Unlock()
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	p.mu.Unlock()
	p.next.ServeHTTP(w, r)
}

func sha512File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha512.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestAccFetchDiskGlance runs real packer builds against Debian's
// glance-api on loopback: builder -> sparsify (qcow2) -> fetchdisk, the
// image served by the built-in server and imported with web-download; and
// the failure paths. Glance is started once for all cases and stopped at
// the end; no process is left.
func TestAccFetchDiskGlance(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	if err := glancetest.Available(); err != nil {
		t.Skipf("glance-api is not available (scripts/install-deps.sh installs it): %v", err)
	}
	servePort, _ := glancetest.FreePort()
	deadPort, _ := glancetest.FreePort()
	otherPort, _ := glancetest.FreePort()
	token := "tok-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-SECRET"
	g, err := glancetest.Start(t.TempDir(), token, []int{servePort, deadPort, otherPort})
	if err != nil {
		t.Fatal(err)
	}
	glancePID := g.PID()
	t.Cleanup(func() {
		g.Stop()
		if err := syscall.Kill(glancePID, 0); err == nil {
			t.Errorf("glance-api (pid %d) still runs after Stop", glancePID)
		}
	})
	defer func() {
		if t.Failed() {
			t.Log(g.Tail())
		}
	}()
	gu, _ := url.Parse(g.Endpoint)
	proxy := &flakyProxy{next: httputil.NewSingleHostReverseProxy(gu)}
	ps := httptest.NewServer(proxy)
	defer ps.Close()
	ctx := context.Background()

	disk := fixture.NewDisk(t, fixture.DiskOptions{})
	glanceAuth := `      endpoint            = "` + ps.URL + `"
      token               = "` + token + `"
`
	templateAuth := func(auth, pp string) string {
		return `
source "imagefactory" "t" {
  base_image       = "` + disk.Path + `"
  output_directory = "out"
}
build {
  sources = ["source.imagefactory.t"]
  post-processors {
    post-processor "imagefactory-sparsify" {
      format      = "qcow2"
      compression = "zstd"
      checksums   = []
    }
    post-processor "imagefactory-fetchdisk" {
      api                 = "glance"
` + auth + `      poll_interval       = "500ms"
      import_timeout      = "5m"
      keep_input_artifact = true
      properties          = { os_distro = "debian" }
      tags                = ["imagefactory"]
` + pp + `
    }
  }
}
`
	}
	template := func(pp string) string { return templateAuth(glanceAuth, pp) }
	countImages := func() int {
		imgs, err := g.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(imgs)
	}
	noSecrets := func(t *testing.T, h *fixture.Harness, res fixture.Result, secrets ...string) {
		t.Helper()
		log, err := os.ReadFile(h.LogPath)
		if err != nil {
			t.Fatalf("PACKER_LOG, to look for secrets in: %v", err)
		}
		for _, s := range append(secrets, token) {
			if strings.Contains(res.Output, s) || strings.Contains(string(log), s) {
				t.Errorf("a secret (%.6s...) appears in Packer's output or PACKER_LOG", s)
			}
		}
	}

	t.Run("served-active", func(t *testing.T) {
		h := fixture.Packer(t)
		before := fixture.LeakSnapshot()
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		res := h.Build(t, template(`      serve_address = "127.0.0.1:`+strconv.Itoa(servePort)+`"
      image_name    = "factory-debian"`), nil)
		if res.ExitCode != 0 {
			t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
		}
		noSecrets(t, h, res)
		imgs, _ := g.Images(ctx)
		if len(imgs) != 1 {
			t.Fatalf("Glance holds %d images, want 1: %+v", len(imgs), imgs)
		}
		img := imgs[0]
		qcow := filepath.Join(h.Dir, "out", "t.qcow2")
		if img.Status != "active" || img.Name != "factory-debian" || img.DiskFormat != "qcow2" || img.HashAlgo != "sha512" || img.HashValue != sha512File(t, qcow) {
			t.Errorf("image %+v; want active qcow2 with the sha512 of %s", img, qcow)
		}
		for _, want := range []string{"imported into glance", "server: GET from 127.0.0.1", "Server closed: ", "glance image " + img.ID} {
			if !strings.Contains(res.Output, want) {
				t.Errorf("output lacks %q:\n%s", want, res.Output)
			}
		}
		// Scoped to this build's own paths: other builds on the machine
		// (their plugins, their chroots) are not ours to report.
		before.AssertNoLeaksIn(t, h.Base, mountPath(t, res.Output))
		// The server lived only for the import.
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(servePort), time.Second); err == nil {
			c.Close()
			t.Errorf("the built-in server still listens on %d after the build", servePort)
		}
	})

	t.Run("keystone-password", func(t *testing.T) {
		// A stand-in Keystone v3: the password buys Glance's token, and
		// the catalog names the image endpoint.
		password := "pw-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-SECRET"
		var authed int
		ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Auth struct {
					Identity struct {
						Password struct {
							User struct{ Name, Password string }
						}
					}
				}
			}
			json.NewDecoder(r.Body).Decode(&req)
			u := req.Auth.Identity.Password.User
			if r.URL.Path != "/v3/auth/tokens" || u.Name != "packer" || u.Password != password {
				http.Error(w, "unauthorised", http.StatusUnauthorized)
				return
			}
			authed++
			w.Header().Set("X-Subject-Token", token)
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"token":{"catalog":[{"type":"image","endpoints":[{"interface":"public","region":"RegionOne","url":%q}]}]}}`, ps.URL)
		}))
		defer ks.Close()
		h := fixture.Packer(t)
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		n := countImages()
		res := h.Build(t, templateAuth(`      auth_url            = "`+ks.URL+`/v3"
      username            = "packer"
      password            = "`+password+`"
      project_name        = "imagefactory"
      region              = "RegionOne"
`, `      serve_address = "127.0.0.1:`+strconv.Itoa(servePort)+`"`), nil)
		if res.ExitCode != 0 {
			t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if authed != 1 || countImages() != n+1 {
			t.Errorf("%d Keystone logins, %d images (was %d)", authed, countImages(), n)
		}
		noSecrets(t, h, res, password)
	})

	t.Run("500-twice-then-recovers", func(t *testing.T) {
		h := fixture.Packer(t)
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		n := countImages()
		proxy.mu.Lock()
		proxy.fail, proxy.failed = 2, 0
		proxy.mu.Unlock()
		res := h.Build(t, template(`      serve_address = "127.0.0.1:`+strconv.Itoa(servePort)+`"`), nil)
		if res.ExitCode != 0 {
			t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
		}
		proxy.mu.Lock()
		failed := proxy.failed
		proxy.mu.Unlock()
		if failed != 2 || strings.Count(res.Output, "500 Internal Server Error; retrying") != 2 {
			t.Errorf("%d injected failures, want 2 retried:\n%s", failed, res.Output)
		}
		if got := countImages(); got != n+1 {
			t.Errorf("Glance holds %d images, want %d (one per create that succeeded)", got, n+1)
		}
		noSecrets(t, h, res)
	})

	t.Run("unreachable-url", func(t *testing.T) {
		h := fixture.Packer(t)
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		n := countImages()
		res := h.Build(t, template(`      image_url      = "http://127.0.0.1:`+strconv.Itoa(deadPort)+`/nothing.qcow2"
      image_checksum = "sha512:`+strings.Repeat("ab", 64)+`"`), nil)
		if res.ExitCode == 0 || !strings.Contains(res.Output, "the import failed") {
			t.Fatalf("want a failed import (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if !strings.Contains(res.Output, "Deleted the half-made image") || countImages() != n {
			t.Errorf("the failed image is still in Glance:\n%s", res.Output)
		}
		noSecrets(t, h, res)
	})

	t.Run("checksum-mismatch", func(t *testing.T) {
		// Published elsewhere: a file served by a server of the test, with
		// a checksum that is not its own.
		file := filepath.Join(t.TempDir(), "published.raw")
		os.WriteFile(file, []byte(strings.Repeat("not the image ", 5000)), 0o644)
		srv, err := serve.Start(file, serve.Options{Address: "127.0.0.1:" + strconv.Itoa(otherPort)})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		h := fixture.Packer(t)
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		n := countImages()
		res := h.Build(t, template(`      image_url      = "`+srv.URL()+`"
      image_checksum = "sha512:`+strings.Repeat("0", 128)+`"
      disk_format    = "raw"`), nil)
		if res.ExitCode == 0 || !strings.Contains(res.Output, "checksum mismatch") {
			t.Fatalf("want a checksum mismatch (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if st := srv.Stats(); st.BytesSent == 0 {
			t.Errorf("Glance never fetched the published file: %+v", st)
		}
		if !strings.Contains(res.Output, "Deleted the half-made image") || countImages() != n {
			t.Errorf("the mismatching image is still in Glance:\n%s", res.Output)
		}
		noSecrets(t, h, res)
	})

	t.Run("bad-config", func(t *testing.T) {
		h := fixture.Packer(t)
		res := h.Build(t, template(`      image_url = "http://127.0.0.1:1/x"`), nil)
		if res.ExitCode == 0 || !strings.Contains(res.Output, "image_url needs image_checksum") {
			t.Fatalf("want a configuration error (exit %d):\n%s", res.ExitCode, res.Output)
		}
	})
	t.Run("ctrl-c-deletes-the-half-made-image", func(t *testing.T) {
		// A source that sends a little and then stalls: the import hangs
		// in "importing" until the build is interrupted.
		release := make(chan struct{})
		stall := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(64<<20))
			w.Write(make([]byte, 4096))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(otherPort))
		if err != nil {
			t.Fatal(err)
		}
		slow := &httptest.Server{Listener: ln, Config: &http.Server{Handler: stall}}
		slow.Start()
		defer slow.Close()
		defer close(release)
		h := fixture.Packer(t)
		before := fixture.LeakSnapshot()
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		n := countImages()
		run := h.Start(t, template(`      image_url      = "`+slow.URL+`/stalled.qcow2"
      image_checksum = "sha512:`+strings.Repeat("cd", 64)+`"`), nil)
		run.WaitForOutput(t, "glance: importing", 5*time.Minute)
		run.Interrupt(t, syscall.SIGINT)
		res := run.Wait()
		if res.ExitCode == 0 {
			t.Fatalf("an interrupted build succeeded:\n%s", res.Output)
		}
		if !strings.Contains(res.Output, "Deleted the half-made image") || countImages() != n {
			t.Errorf("the interrupted import's image is still in Glance:\n%s", res.Output)
		}
		before.AssertNoLeaksIn(t, h.Base, mountPath(t, res.Output))
	})
}

// mountPath is where the builder mounted the image, from its output.
func mountPath(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`Mounted the root filesystem at (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the build did not say where it mounted the image:\n%s", out)
	}
	return m[1]
}
