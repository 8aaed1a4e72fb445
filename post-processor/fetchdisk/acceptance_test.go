package fetchdisk_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
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
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/serve"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// flakyProxy stands in front of Glance: it answers `status` to the next
// `fail` requests that match, passes everything else through, and counts
// image creations and the import calls' bodies (they carry the URL Glance
// is told to fetch).
type flakyProxy struct {
	next    http.Handler
	mu      sync.Mutex
	fail    int
	status  int
	match   func(*http.Request) bool
	failed  int
	creates int      // POST /v2/images that reached Glance
	imports []string // bodies of POST /v2/images/{id}/import
}

func isCreate(r *http.Request) bool { return r.Method == "POST" && r.URL.Path == "/v2/images" }

func isImport(r *http.Request) bool {
	return r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/import")
}

// inject makes the next n requests matching match fail with status.
func (p *flakyProxy) inject(n, status int, match func(*http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail, p.status, p.match, p.failed, p.creates, p.imports = n, status, match, 0, 0, nil
}

func (p *flakyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.fail > 0 && p.match != nil && p.match(r) {
		p.fail--
		p.failed++
		p.mu.Unlock()
		http.Error(w, "injected failure", p.status)
		return
	}
	if isCreate(r) {
		p.creates++
	}
	if isImport(r) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		p.imports = append(p.imports, string(body))
	}
	p.mu.Unlock()
	p.next.ServeHTTP(w, r)
}

func (p *flakyProxy) counts() (failed, creates int, imports []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed, p.creates, append([]string(nil), p.imports...)
}

func hashFile(t *testing.T, path string, h hash.Hash) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sha512File(t *testing.T, path string) string { return hashFile(t, path, sha512.New()) }

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
	redirPort, _ := glancetest.FreePort()
	goodPort, _ := glancetest.FreePort()
	disallowedPort, _ := glancetest.FreePort() // not in Glance's allowed_ports
	leakPort, _ := glancetest.FreePort()       // nor this one
	token := "tok-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-SECRET"
	allowedPorts := []int{servePort, deadPort, otherPort, redirPort, goodPort}
	g, err := glancetest.Start(t.TempDir(), token, allowedPorts)
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
		before := fixture.LeakSnapshot()
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
		before.AssertNoLeaksIn(t, h.Base, mountPath(t, res.Output))
	})

	t.Run("500-twice-then-recovers", func(t *testing.T) {
		h := fixture.Packer(t)
		before := fixture.LeakSnapshot()
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		n := countImages()
		proxy.inject(2, http.StatusInternalServerError, isCreate)
		res := h.Build(t, template(`      serve_address = "127.0.0.1:`+strconv.Itoa(servePort)+`"`), nil)
		if res.ExitCode != 0 {
			t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
		}
		failed, _, _ := proxy.counts()
		if failed != 2 || strings.Count(res.Output, "500 Internal Server Error; retrying") != 2 {
			t.Errorf("%d injected failures, want 2 retried:\n%s", failed, res.Output)
		}
		if got := countImages(); got != n+1 {
			t.Errorf("Glance holds %d images, want %d (one per create that succeeded)", got, n+1)
		}
		noSecrets(t, h, res)
		before.AssertNoLeaksIn(t, h.Base, mountPath(t, res.Output))
	})

	t.Run("unreachable-url", func(t *testing.T) {
		h := fixture.Packer(t)
		before := fixture.LeakSnapshot()
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		n := countImages()
		proxy.inject(0, 0, nil)
		dead := "http://127.0.0.1:" + strconv.Itoa(deadPort) + "/nothing.qcow2"
		res := h.Build(t, template(`      image_url      = "`+dead+`"
      image_checksum = "sha512:`+strings.Repeat("ab", 64)+`"`), nil)
		// The probe finds nobody there: nothing is asked of Glance.
		if res.ExitCode == 0 || !strings.Contains(res.Output, "image_url: GET "+dead+": ") || !strings.Contains(res.Output, "connection refused") {
			t.Fatalf("want the probe's failure naming the URL (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if _, creates, _ := proxy.counts(); creates != 0 || countImages() != n {
			t.Errorf("%d images created for an unreachable URL:\n%s", creates, res.Output)
		}
		noSecrets(t, h, res)
		before.AssertNoLeaksIn(t, h.Base, mountPath(t, res.Output))
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
		before := fixture.LeakSnapshot()
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
		before.AssertNoLeaksIn(t, h.Base, mountPath(t, res.Output))
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
		slow := stallServer(t, otherPort)
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

	// The cases of issue 19 below take their artifact from Packer's own
	// file builder (a file copied as it is): no disk build, seconds each.
	work := t.TempDir()
	qcow := filepath.Join(work, "small.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", qcow, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	rawFile := filepath.Join(work, "small.raw")
	os.WriteFile(rawFile, bytes.Repeat([]byte("raw disk bytes "), 70000), 0o644)
	iso := filepath.Join(work, "seed.iso")
	if err := qemu.WriteSeed(iso, qemu.Seed{UserData: "#cloud-config\n", MetaData: "instance-id: iid-fetchdisk\n"}); err != nil {
		t.Fatal(err)
	}
	fileTemplate := func(file, auth, pp string) string {
		if !strings.Contains(pp, "import_timeout") {
			pp += "\n    import_timeout = \"3m\""
		}
		return `
source "file" "f" {
  source = "` + file + `"
  target = "out/` + filepath.Base(file) + `"
}
build {
  sources = ["source.file.f"]
  post-processor "imagefactory-fetchdisk" {
    api            = "glance"
` + auth + `    poll_interval  = "300ms"
` + pp + `
  }
}
`
	}
	// The test Glance's [import_filtering_opts], as fetchdisk's options.
	ports := []string{"80", "443"}
	for _, p := range allowedPorts {
		ports = append(ports, strconv.Itoa(p))
	}
	filtering := `    import_allowed_hosts = ["127.0.0.1"]
    import_allowed_ports = [` + strings.Join(ports, ", ") + `]
`
	serveAt := func(port int) string { return `    serve_address = "127.0.0.1:` + strconv.Itoa(port) + `"` + "\n" }
	newHarness := func(t *testing.T) *fixture.Harness {
		h := fixture.Packer(t)
		h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
		return h
	}
	// buildCounting builds with the file builder and tells what reached
	// Glance: image creations and import calls.
	buildCounting := func(t *testing.T, file, pp string) (fixture.Result, int, []string) {
		h := newHarness(t)
		proxy.inject(0, 0, nil)
		res := h.Build(t, fileTemplate(file, glanceAuth, pp), nil)
		_, creates, imports := proxy.counts()
		return res, creates, imports
	}
	imageNamed := func(g *glancetest.Glance, name string) glancetest.Image {
		t.Helper()
		imgs, err := g.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range imgs {
			if img.Name == name {
				return img
			}
		}
		t.Fatalf("Glance holds no image %q: %+v", name, imgs)
		return glancetest.Image{}
	}
	// A server on an allowed port publishing the qcow2 (image_url).
	good, err := serve.Start(qcow, serve.Options{Address: "127.0.0.1:" + strconv.Itoa(goodPort)})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()

	t.Run("format-mismatch", func(t *testing.T) {
		h := newHarness(t)
		n := countImages()
		proxy.inject(0, 0, nil)
		res := h.Build(t, fileTemplate(qcow, glanceAuth, serveAt(servePort)+`    disk_format = "raw"`), nil)
		_, creates, _ := proxy.counts()
		if res.ExitCode == 0 || !strings.Contains(res.Output, `disk_format "raw" contradicts the content of`) || !strings.Contains(res.Output, "which is qcow2") {
			t.Fatalf("want the mismatch refused, naming raw and qcow2 (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if creates != 0 || countImages() != n {
			t.Errorf("%d images created before the refusal", creates)
		}
		// The escape hatch: imported as told, with a warning.
		h = newHarness(t)
		res = h.Build(t, fileTemplate(qcow, glanceAuth, serveAt(servePort)+`    disk_format = "raw"
    disk_format_mismatch = "allow"
    image_name = "mismatch-allowed"`), nil)
		if res.ExitCode != 0 || !strings.Contains(res.Output, "importing it as raw all the same") {
			t.Fatalf("want the import with a warning (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if img := imageNamed(g, "mismatch-allowed"); img.Status != "active" || img.DiskFormat != "raw" || img.HashValue != sha512File(t, qcow) {
			t.Errorf("image %+v", img)
		}
		// image_url: the format of what it serves, read by the probe,
		// against disk_format from a raw artifact.
		h = newHarness(t)
		proxy.inject(0, 0, nil)
		res = h.Build(t, fileTemplate(rawFile, glanceAuth, `    image_url = "`+good.URL()+`"
    image_checksum = "sha512:`+sha512File(t, qcow)+`"`), nil)
		_, creates, _ = proxy.counts()
		if res.ExitCode == 0 || !strings.Contains(res.Output, "image_url: "+good.URL()+": 206 Partial Content") ||
			!strings.Contains(res.Output, `disk_format "raw" contradicts the content of what image_url serves, which is qcow2`) || creates != 0 {
			t.Fatalf("want the probe's report and the mismatch refused before any image (exit %d, %d created):\n%s", res.ExitCode, creates, res.Output)
		}
	})

	t.Run("iso", func(t *testing.T) {
		h := newHarness(t)
		res := h.Build(t, fileTemplate(iso, glanceAuth, serveAt(servePort)+`    disk_format = "raw"`), nil)
		if res.ExitCode == 0 || !strings.Contains(res.Output, "which is iso") {
			t.Fatalf("want raw refused for an ISO (exit %d):\n%s", res.ExitCode, res.Output)
		}
		h = newHarness(t)
		res = h.Build(t, fileTemplate(iso, glanceAuth, serveAt(servePort)+`    disk_format = "iso"
    image_name = "seed-iso"`), nil)
		if res.ExitCode != 0 {
			t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if img := imageNamed(g, "seed-iso"); img.Status != "active" || img.DiskFormat != "iso" || img.HashValue != sha512File(t, iso) {
			t.Errorf("image %+v", img)
		}
	})

	t.Run("redirects", func(t *testing.T) {
		// On a port Glance may fetch from, redirecting elsewhere.
		far, err := serve.Start(qcow, serve.Options{Address: "127.0.0.1:" + strconv.Itoa(disallowedPort)})
		if err != nil {
			t.Fatal(err)
		}
		defer far.Close()
		redirector := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/to-disallowed-port.qcow2":
				http.Redirect(w, r, far.URL(), http.StatusFound)
			case "/to-403.qcow2":
				http.Redirect(w, r, "/forbidden.qcow2", http.StatusFound)
			case "/to-good.qcow2":
				http.Redirect(w, r, good.URL(), http.StatusFound)
			default:
				http.Error(w, "forbidden", http.StatusForbidden)
			}
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(redirPort))
		if err != nil {
			t.Fatal(err)
		}
		go redirector.Serve(ln)
		defer redirector.Close()
		base := "http://127.0.0.1:" + strconv.Itoa(redirPort)
		sum := `    image_checksum = "sha512:` + sha512File(t, qcow) + `"` + "\n"
		n := countImages()

		// With the cloud's import filtering stated: refused before any
		// image is made, naming the final URL, its port and the option.
		res, creates, imports := buildCounting(t, qcow, `    image_url = "`+base+`/to-disallowed-port.qcow2"`+"\n"+sum+filtering)
		want := "image_url redirects to " + far.URL() + ": its port " + strconv.Itoa(disallowedPort) + " is not in import_allowed_ports [80, 443, "
		if res.ExitCode == 0 || !strings.Contains(res.Output, want) || creates != 0 || len(imports) != 0 {
			t.Fatalf("want the refusal before any image (%d created, %d imports), naming %q (exit %d):\n%s", creates, len(imports), want, res.ExitCode, res.Output)
		}
		if st := far.Stats(); st.Requests != 1 || countImages() != n {
			t.Errorf("%d requests reached the disallowed port (want the probe's 1), %d images (want %d)", st.Requests, countImages(), n)
		}
		// Without it: Glance refuses at the import call, naming the URL;
		// the image it was made for is deleted.
		res, creates, imports = buildCounting(t, qcow, `    image_url = "`+base+`/to-disallowed-port.qcow2"`+"\n"+sum)
		if res.ExitCode == 0 || !strings.Contains(res.Output, "does not pass filtering: "+far.URL()) || creates != 1 || len(imports) != 1 {
			t.Fatalf("want Glance's refusal at the import call naming the final URL (exit %d, %d created, %d imports):\n%s", res.ExitCode, creates, len(imports), res.Output)
		}
		if !strings.Contains(res.Output, "redirects off its host or port, to "+far.URL()) {
			t.Errorf("no warning of the redirect:\n%s", res.Output)
		}
		if st := far.Stats(); st.Requests != 2 || countImages() != n {
			t.Errorf("%d requests reached the disallowed port (want the probes' 2), %d images (want %d)", st.Requests, countImages(), n)
		}

		res, creates, _ = buildCounting(t, qcow, `    image_url = "`+base+`/to-403.qcow2"`+"\n"+sum)
		if res.ExitCode == 0 || !strings.Contains(res.Output, "GET "+base+"/forbidden.qcow2 answered 403 Forbidden") || creates != 0 {
			t.Fatalf("want the 403 named before any image (exit %d, %d created):\n%s", res.ExitCode, creates, res.Output)
		}

		// With the filtering stated, a redirect it admits is followed.
		res, _, _ = buildCounting(t, qcow, `    image_url = "`+base+`/to-good.qcow2"`+"\n"+sum+filtering+`    image_name = "redirected"`)
		if res.ExitCode != 0 {
			t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if img := imageNamed(g, "redirected"); img.Status != "active" || img.HashValue != sha512File(t, qcow) {
			t.Errorf("image %+v", img)
		}
	})

	t.Run("secret-path-redacted", func(t *testing.T) {
		// Served on a port Glance may not fetch from: Glance's 400 echoes
		// the URL, secret path and all.
		h := newHarness(t)
		proxy.inject(0, 0, nil)
		res := h.Build(t, fileTemplate(qcow, glanceAuth, serveAt(leakPort)), nil)
		_, _, imports := proxy.counts()
		if res.ExitCode == 0 || len(imports) != 1 || !strings.Contains(res.Output, "does not pass filtering: http://127.0.0.1:"+strconv.Itoa(leakPort)+"/…/small.qcow2") {
			t.Fatalf("want Glance's refusal, redacted (exit %d, imports %q):\n%s", res.ExitCode, imports, res.Output)
		}
		m := regexp.MustCompile(`/([0-9a-f]{48})/small\.qcow2`).FindStringSubmatch(imports[0])
		if m == nil {
			t.Fatalf("no secret path in the import call %q", imports[0])
		}
		noSecrets(t, h, res, m[1])
		// With the filtering stated: refused before any image, the hash
		// algorithm's probe image among them, the secret path redacted.
		res, creates, imports := buildCounting(t, qcow, serveAt(leakPort)+filtering)
		want := "the built-in server's URL http://127.0.0.1:" + strconv.Itoa(leakPort) + "/…/small.qcow2: its port " + strconv.Itoa(leakPort) + " is not in import_allowed_ports"
		if res.ExitCode == 0 || !strings.Contains(res.Output, want) || creates != 0 || len(imports) != 0 {
			t.Fatalf("want the refusal before any image (%d created, %d imports), naming %q (exit %d):\n%s", creates, len(imports), want, res.ExitCode, res.Output)
		}
		if sec := regexp.MustCompile(`127\.0\.0\.1:[0-9]+/([0-9a-f]{48})/`).FindStringSubmatch(res.Output); sec != nil {
			t.Errorf("the secret path %.6s... is in the output", sec[1])
		}
	})

	t.Run("honest-final-messages", func(t *testing.T) {
		// A 501 is final: reported as it is, after one request.
		h := newHarness(t)
		n := countImages()
		proxy.inject(5, http.StatusNotImplemented, isImport)
		res := h.Build(t, fileTemplate(qcow, glanceAuth, `    image_url = "`+good.URL()+`"
    image_checksum = "sha512:`+sha512File(t, qcow)+`"`), nil)
		failed, _, _ := proxy.counts()
		if res.ExitCode == 0 || !strings.Contains(res.Output, "501 Not Implemented") || failed != 1 || strings.Contains(res.Output, "retrying") {
			t.Fatalf("want the 501 reported after 1 request (%d sent, exit %d):\n%s", failed, res.ExitCode, res.Output)
		}
		if countImages() != n {
			t.Errorf("the image of the refused import is still in Glance")
		}
		proxy.inject(0, 0, nil)

		// A stalled download: the timeout names what Glance last said.
		slow := stallServer(t, otherPort)
		h = newHarness(t)
		res = h.Build(t, fileTemplate(qcow, glanceAuth, `    image_url = "`+slow.URL+`/stalled.qcow2"
    image_checksum = "sha512:`+strings.Repeat("cd", 64)+`"
    import_timeout = "12s"`), nil)
		if res.ExitCode == 0 || !regexp.MustCompile(`import timed out after 12s; the last state glance reported: importing \(.*os_glance_import`).MatchString(res.Output) {
			t.Fatalf("want a timeout naming Glance's last state (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if !strings.Contains(res.Output, "Deleted the half-made image") || countImages() != n {
			t.Errorf("the timed-out image is still in Glance:\n%s", res.Output)
		}
	})

	t.Run("glance-hashing-sha256", func(t *testing.T) {
		gb, err := glancetest.StartWith(t.TempDir(), token, glancetest.Options{AllowedPorts: []int{servePort, goodPort}, HashingAlgorithm: "sha256"})
		if err != nil {
			t.Fatal(err)
		}
		defer gb.Stop()
		defer func() {
			if t.Failed() {
				t.Log(gb.Tail())
			}
		}()
		authB := `    endpoint = "` + gb.Endpoint + `"
    token    = "` + token + `"
`
		sha256Of := hashFile(t, qcow, sha256.New())
		h := newHarness(t)
		res := h.Build(t, fileTemplate(qcow, authB, serveAt(servePort)+`    image_name = "served"`), nil)
		if res.ExitCode != 0 {
			t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
		}
		for _, want := range []string{"Glance hashes with sha256 (os_hash_algo of a one-byte probe image", "sha256 of the bytes served, hashed as they were sent: " + sha256Of, "compared in sha256"} {
			if !strings.Contains(res.Output, want) {
				t.Errorf("output lacks %q:\n%s", want, res.Output)
			}
		}
		if img := imageNamed(gb, "served"); img.HashAlgo != "sha256" || img.HashValue != sha256Of {
			t.Errorf("image %+v, want sha256 %s", img, sha256Of)
		}
		// A sha512 image_checksum for an image_url: verified against
		// what the URL serves, compared with Glance in sha256.
		h = newHarness(t)
		res = h.Build(t, fileTemplate(qcow, authB, `    image_url = "`+good.URL()+`"
    image_checksum = "sha512:`+sha512File(t, qcow)+`"
    image_name = "published"`), nil)
		if res.ExitCode != 0 || !strings.Contains(res.Output, "image_checksum verified") || !strings.Contains(res.Output, "compared in sha256") {
			t.Fatalf("want the import verified in both algorithms (exit %d):\n%s", res.ExitCode, res.Output)
		}
		if img := imageNamed(gb, "published"); img.HashAlgo != "sha256" || img.HashValue != sha256Of {
			t.Errorf("image %+v, want sha256 %s", img, sha256Of)
		}
	})
}

// stallServer serves a qcow2's first 4 KiB on port and then stalls until
// the test ends; a ranged GET (the post-processor's probe) gets the head
// it asks for at once.
func stallServer(t *testing.T, port int) *httptest.Server {
	t.Helper()
	const size = 64 << 20
	head := append([]byte("QFI\xfb"), make([]byte, 4092)...)
	release := make(chan struct{})
	stall := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(head)-1, size))
			w.Header().Set("Content-Length", strconv.Itoa(len(head)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(head)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(head)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	slow := &httptest.Server{Listener: ln, Config: &http.Server{Handler: stall}}
	slow.Start()
	t.Cleanup(func() { close(release); slow.Close() })
	return slow
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
