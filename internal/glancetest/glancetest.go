// Package glancetest runs Debian's OpenStack Glance (glance-api) on
// loopback for tests and benchmarks: one process (workers = 0), SQLite, a
// file store, web-download enabled for loopback ports the caller names, and
// a paste filter standing in for Keystone that admits one token.
package glancetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Glance is a running glance-api.
type Glance struct {
	Endpoint string // http://127.0.0.1:PORT
	Token    string // the one X-Auth-Token admitted
	Dir      string // config, database, stores, log
	Log      string // glance-api's log file
	cmd      *exec.Cmd
	exited   chan struct{}
}

// Available tells whether glance-api is installed.
func Available() error {
	for _, f := range []string{"/usr/bin/glance-api", "/usr/bin/glance-manage"} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s is missing (apt-get install glance-api): %w", f, err)
		}
	}
	return nil
}

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// fakeAuth is the paste filter: requests with the token get the identity
// headers Keystone's authtoken middleware would set; others get 401.
const fakeAuth = `import webob.dec, webob.exc

def factory(global_conf, **local_conf):
    token = local_conf["token"]
    def filt(app):
        @webob.dec.wsgify
        def mw(req):
            if req.path not in ("/", "/versions", "/healthcheck") and req.headers.get("X-Auth-Token") != token:
                return webob.exc.HTTPUnauthorized()
            req.headers["X-Identity-Status"] = "Confirmed"
            req.headers["X-Project-Id"] = "imagefactory"
            req.headers["X-User-Id"] = "packer"
            req.headers["X-Roles"] = "admin,member,reader"
            return req.get_response(app)
        return mw
    return filt
`

const paste = `[pipeline:glance-api-fakeauth]
pipeline = versionnegotiation fakeauth context rootapp

[filter:fakeauth]
paste.filter_factory = imagefactory_fakeauth:factory
token = %s

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory
`

const conf = `[DEFAULT]
bind_host = 127.0.0.1
bind_port = {{port}}
workers = 0
log_file = {{dir}}/glance-api.log
debug = false
hashing_algorithm = {{hash}}
enabled_backends = fs:file
enabled_import_methods = [glance-direct,web-download]
image_size_cap = 68719476736
show_multiple_locations = false

[database]
connection = sqlite:///{{dir}}/glance.sqlite

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = {{dir}}/images/

[os_glance_staging_store]
filesystem_store_datadir = {{dir}}/staging/

[os_glance_tasks_store]
filesystem_store_datadir = {{dir}}/tasks/

[oslo_concurrency]
lock_path = {{dir}}/lock

[paste_deploy]
flavor = fakeauth
config_file = {{dir}}/glance-api-paste.ini

[import_filtering_opts]
allowed_hosts = [127.0.0.1]
allowed_ports = [{{ports}}]
`

// Options configure a Glance beyond Start's defaults.
type Options struct {
	// AllowedPorts are the loopback ports web-download may fetch from,
	// besides 80 and 443 ([import_filtering_opts] allowed_ports; with an
	// allowed list, Glance ignores disallowed_ports: glance/common/utils.py).
	AllowedPorts []int
	// HashingAlgorithm is [DEFAULT] hashing_algorithm, what Glance
	// reports as os_hash_algo (a hashlib name); default sha512.
	HashingAlgorithm string
}

// Start runs glance-api with its files under dir (which must exist and be
// empty), admitting token, web-download allowed from 127.0.0.1 on
// allowedPorts. Stop it with Stop.
func Start(dir, token string, allowedPorts []int) (*Glance, error) {
	return StartWith(dir, token, Options{AllowedPorts: allowedPorts})
}

// StartWith is Start with Options.
func StartWith(dir, token string, opts Options) (*Glance, error) {
	allowedPorts := opts.AllowedPorts
	if err := Available(); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	ports := []string{"80", "443"}
	for _, p := range allowedPorts {
		ports = append(ports, strconv.Itoa(p))
	}
	for _, d := range []string{"images", "staging", "tasks", "lock", "py"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	algo := opts.HashingAlgorithm
	if algo == "" {
		algo = "sha512"
	}
	c := strings.NewReplacer("{{port}}", strconv.Itoa(port), "{{dir}}", dir, "{{ports}}", strings.Join(ports, ","), "{{hash}}", algo).Replace(conf)
	files := map[string]string{
		"glance-api.conf":             c,
		"glance-api-paste.ini":        fmt.Sprintf(paste, token),
		"py/imagefactory_fakeauth.py": fakeAuth,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	cfg := filepath.Join(dir, "glance-api.conf")
	env := append(os.Environ(), "PYTHONPATH="+filepath.Join(dir, "py"))
	sync := exec.Command("/usr/bin/python3", "/usr/bin/glance-manage", "--config-file", cfg, "db_sync")
	sync.Env = env
	if out, err := sync.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("glance-manage db_sync: %v\n%s", err, out)
	}
	g := &Glance{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), Token: token, Dir: dir,
		Log: filepath.Join(dir, "glance-api.log"), exited: make(chan struct{})}
	out, err := os.Create(filepath.Join(dir, "glance-api.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	g.cmd = exec.Command("/usr/bin/python3", "/usr/bin/glance-api", "--config-file", cfg)
	g.cmd.Env = env
	g.cmd.Stdout, g.cmd.Stderr = out, out
	// Its own process group: Stop ends whatever it started too.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { g.cmd.Wait(); close(g.exited) }()
	if err := g.waitHealthy(60 * time.Second); err != nil {
		g.Stop()
		return nil, fmt.Errorf("%w\n%s", err, g.tail())
	}
	return g, nil
}

func (g *Glance) waitHealthy(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-g.exited:
			return errors.New("glance-api exited during start-up")
		default:
		}
		resp, err := http.Get(g.Endpoint + "/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("glance-api did not answer on %s within %s", g.Endpoint, limit)
}

// PID is glance-api's process ID.
func (g *Glance) PID() int { return g.cmd.Process.Pid }

// tail returns the end of glance-api's output and log, for failures.
func (g *Glance) tail() string {
	var b strings.Builder
	for _, f := range []string{filepath.Join(g.Dir, "glance-api.out"), g.Log} {
		data, _ := os.ReadFile(f)
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", f, data)
	}
	return b.String()
}

// Tail is the end of glance-api's output and log.
func (g *Glance) Tail() string { return g.tail() }

// Stop ends glance-api and its process group: SIGTERM, then SIGKILL after
// 15 s. It returns once the process is gone.
func (g *Glance) Stop() {
	pgid := g.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(15 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-g.exited
	}
	// Anything left in the group (it should be empty) goes too.
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// Image is the part of a Glance image record the tests look at.
type Image struct {
	ID, Status, Name string
	DiskFormat       string `json:"disk_format"`
	HashAlgo         string `json:"os_hash_algo"`
	HashValue        string `json:"os_hash_value"`
	FailedImport     string `json:"os_glance_failed_import"`
	Size             int64
}

// Images lists the images Glance holds.
func (g *Glance) Images(ctx context.Context) ([]Image, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", g.Endpoint+"/v2/images", nil)
	req.Header.Set("X-Auth-Token", g.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct{ Images []Image }
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /v2/images: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Images, err
}
