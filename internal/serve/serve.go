// Package serve publishes one file read-only over HTTP(S) for a cloud to
// fetch: at one unguessable path, with HEAD and single byte ranges, holes
// sent as zeros without reading them from disk, and every client's
// downloads counted. Nothing else is served; Close ends it.
package serve

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Server.
type Options struct {
	// Address to listen on, host:port; port 0 picks a free one.
	Address string
	// PublicHost is the host (and optional port) the cloud reaches us by,
	// when it is not Address's (a wildcard listen, NAT). Empty: Address's.
	PublicHost string
	// TLSCert and TLSKey (PEM files) make it HTTPS.
	TLSCert, TLSKey string
	// Log receives one line per finished request: who, what, how many bytes.
	Log func(string)
	// Progress is called with the total bytes sent so far, as they go.
	Progress func(sent int64)
	// Hash, when set, hashes the file as it is sent: every GET of the
	// whole file that ends is hashed on the way, from the bytes it sends
	// (holes as zeros), with no read of its own. Sum returns the result.
	Hash func() hash.Hash
}

// ErrNoWholeSend is Sum's answer when no GET of the whole file has ended.
var ErrNoWholeSend = errors.New("serve: no client fetched the whole file")

// Stats are the server's counters.
type Stats struct {
	Requests  int64 // requests for the file (GET and HEAD)
	Refused   int64 // requests for anything else
	BytesSent int64 // body bytes sent
	BytesRead int64 // bytes read from the file (data regions only)
	Clients   map[string]int64
}

// Server serves one file until closed.
type Server struct {
	file    string
	size    int64
	secret  string
	urlPath string
	url     string
	opts    Options
	ln      net.Listener
	srv     *http.Server
	done    chan error

	closeOnce sync.Once
	closeErr  error
	active    sync.WaitGroup // requests being answered; Close waits for them

	requests, refused, sent, read atomic.Int64
	mu                            sync.Mutex
	clients                       map[string]int64 // client address -> body bytes sent
	sums                          map[string]int   // hex digest of a whole send -> how many
}

// Start serves file (a regular file) at a random path on opts.Address.
func Start(file string, opts Options) (*Server, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("serve: %s is not a regular file", file)
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	s := &Server{
		file:    file,
		size:    fi.Size(),
		secret:  hex.EncodeToString(secret),
		urlPath: "/" + hex.EncodeToString(secret) + "/" + url.PathEscape(path.Base(file)),
		opts:    opts,
		clients: map[string]int64{},
		sums:    map[string]int{},
		done:    make(chan error, 1),
	}
	var tlsConf *tls.Config
	if opts.TLSCert != "" || opts.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(opts.TLSCert, opts.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("serve: tls_cert/tls_key: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	addr := opts.Address
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serve: listen on %s: %w", addr, err)
	}
	s.ln = ln
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
		ln = tls.NewListener(ln, tlsConf)
	}
	port := strconv.Itoa(s.ln.Addr().(*net.TCPAddr).Port)
	host := opts.PublicHost
	if host == "" {
		host, _, _ = net.SplitHostPort(s.ln.Addr().String())
	}
	if _, _, err := net.SplitHostPort(host); err != nil { // no port given
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	s.url = scheme + "://" + host + s.urlPath
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// URL is where the file is served; its path is the secret.
func (s *Server) URL() string { return s.url }

// Redact replaces the URL's secret path component wherever it appears in
// msg by "…": for messages that pass through from a client that echoes
// the URL (a cloud's error).
func (s *Server) Redact(msg string) string { return strings.ReplaceAll(msg, s.secret, "…") }

// Sum is the hex digest, by Options.Hash, of the file as sent whole: the
// same for every GET of all of it that ended. It is ErrNoWholeSend when
// none did, and an error when two sent different bytes (the file changed).
// Call it after Close, or when no download is under way.
func (s *Server) Sum() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch len(s.sums) {
	case 0:
		return "", ErrNoWholeSend
	case 1:
		for sum := range s.sums {
			return sum, nil
		}
	}
	return "", fmt.Errorf("serve: %s changed while it was served: %d whole sends hashed to %d different sums", s.file, len(s.sums), len(s.sums))
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	clients := make(map[string]int64, len(s.clients))
	for k, v := range s.clients {
		clients[k] = v
	}
	s.mu.Unlock()
	return Stats{Requests: s.requests.Load(), Refused: s.refused.Load(), BytesSent: s.sent.Load(), BytesRead: s.read.Load(), Clients: clients}
}

// Close stops listening and ends downloads in progress; it returns once
// no request is being answered.
// Closing twice is harmless.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.srv.Close()
		// Close drops the connections; the handlers notice and return,
		// and nothing is logged after Close.
		s.active.Wait()
		if serr := <-s.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && s.closeErr == nil {
			s.closeErr = serr
		}
	})
	return s.closeErr
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Log != nil {
		s.opts.Log(fmt.Sprintf(format, args...))
	}
}

// ServeHTTP answers GET and HEAD for the one path and 404 for any other.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.active.Add(1)
	defer s.active.Done()
	client, _, _ := net.SplitHostPort(r.RemoteAddr)
	if r.URL.EscapedPath() != s.urlPath {
		s.refused.Add(1)
		// The path is the secret: do not echo what was asked.
		s.logf("refused %s from %s: not the served path", r.Method, client)
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.refused.Add(1)
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.requests.Add(1)
	start, n, status := int64(0), s.size, http.StatusOK
	h := w.Header()
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	if rg := r.Header.Get("Range"); rg != "" {
		var ok bool
		start, n, ok = parseRange(rg, s.size)
		switch {
		case !ok:
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", s.size))
			http.Error(w, "range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
			s.logf("%s from %s: range %q not satisfiable", r.Method, client, rg)
			return
		case n >= 0:
			status = http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+n-1, s.size))
		default: // a form we do not split (several ranges): the whole file
			start, n = 0, s.size
		}
	}
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		s.logf("HEAD from %s", client)
		return
	}
	f, err := os.Open(s.file)
	if err != nil {
		http.Error(w, "cannot open the file", http.StatusInternalServerError)
		s.logf("GET from %s: %v", client, err)
		return
	}
	defer f.Close()
	w.WriteHeader(status)
	t0 := time.Now()
	var out io.Writer = &countingWriter{w: w, s: s}
	var sum hash.Hash
	if s.opts.Hash != nil && start == 0 && n == s.size {
		sum = s.opts.Hash()
		out = io.MultiWriter(out, sum)
	}
	written, read, err := CopySparse(r.Context(), out, f, start, n)
	s.read.Add(read)
	s.mu.Lock()
	s.clients[client] += written
	if sum != nil && err == nil && written == s.size {
		s.sums[hex.EncodeToString(sum.Sum(nil))]++
	}
	s.mu.Unlock()
	what := "whole file"
	if status == http.StatusPartialContent {
		what = fmt.Sprintf("bytes %d-%d", start, start+n-1)
	}
	msg := fmt.Sprintf("GET from %s (%s): %d bytes sent, %d read from disk, in %s", client, what, written, read, time.Since(t0).Round(time.Millisecond))
	if err != nil {
		msg += fmt.Sprintf(" (ended: %v)", err)
	}
	s.logf("%s", msg)
}

type countingWriter struct {
	w http.ResponseWriter
	s *Server
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.add(int64(n))
	return n, err
}

// ReadFrom keeps net/http's sendfile path for data regions.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.w.(io.ReaderFrom).ReadFrom(r)
	c.add(n)
	return n, err
}

func (c *countingWriter) add(n int64) {
	total := c.s.sent.Add(n)
	if c.s.opts.Progress != nil && n > 0 {
		c.s.opts.Progress(total)
	}
}

// parseRange reads a single "bytes=" range of a file of size bytes. It
// returns n < 0 with ok for forms served whole (several ranges), and !ok
// for a range that cannot be satisfied or parsed.
func parseRange(h string, size int64) (start, n int64, ok bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !found {
		return 0, 0, false
	}
	if strings.Contains(spec, ",") {
		return 0, -1, true
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if a == "" { // the last b bytes
		k, err := strconv.ParseInt(b, 10, 64)
		if err != nil || k <= 0 || size == 0 {
			return 0, 0, false
		}
		k = min(k, size)
		return size - k, k, true
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 || first >= size {
		return 0, 0, false
	}
	last := size - 1
	if b != "" {
		l, err := strconv.ParseInt(b, 10, 64)
		if err != nil || l < first {
			return 0, 0, false
		}
		last = min(l, size-1)
	}
	return first, last - first + 1, true
}
