package serve

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// sparseFile writes a 64 MiB file with data at 0, 20 MiB and the last
// 100 KiB; the rest are holes. It returns its path and content.
func sparseFile(t *testing.T) (string, []byte) {
	t.Helper()
	const size = 64 << 20
	want := make([]byte, size)
	p := filepath.Join(t.TempDir(), "disk image.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ off, n int64 }{{0, 1 << 20}, {20 << 20, 3 << 20}, {size - 100<<10, 100 << 10}} {
		chunk := make([]byte, r.n)
		rand.Read(chunk)
		copy(want[r.off:], chunk)
		if _, err := f.WriteAt(chunk, r.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return p, want
}

func start(t *testing.T, file string, opts Options) *Server {
	t.Helper()
	s, err := Start(file, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestGetWholeAndBytesRead(t *testing.T) {
	p, want := sparseFile(t)
	var logs []string
	var mu sync.Mutex
	var progress int64
	s := start(t, p, Options{Address: "127.0.0.1:0", Log: func(l string) { mu.Lock(); logs = append(logs, l); mu.Unlock() },
		Progress: func(n int64) { mu.Lock(); progress = n; mu.Unlock() }})
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") || !strings.HasSuffix(s.URL(), "/disk%20image.raw") {
		t.Errorf("URL %q", s.URL())
	}
	resp, err := http.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %d", err, resp.StatusCode)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	if resp.Header.Get("Accept-Ranges") != "bytes" || resp.ContentLength != int64(len(want)) {
		t.Errorf("headers %v", resp.Header)
	}
	st := s.Stats()
	alloc, err := Allocated(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesSent != int64(len(want)) || st.BytesRead > alloc || st.BytesRead < 4<<20 {
		t.Errorf("stats %+v, allocated %d: holes must not be read", st, alloc)
	}
	if st.Clients["127.0.0.1"] != int64(len(want)) {
		t.Errorf("per-client bytes %v", st.Clients)
	}
	mu.Lock()
	defer mu.Unlock()
	if progress != int64(len(want)) {
		t.Errorf("progress ended at %d", progress)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "GET from 127.0.0.1") || !strings.Contains(logs[0], fmt.Sprintf("%d bytes sent", len(want))) {
		t.Errorf("log %q", logs)
	}
}

func TestRangeAndHead(t *testing.T) {
	p, want := sparseFile(t)
	s := start(t, p, Options{})
	size := int64(len(want))
	cases := []struct {
		rng        string
		status     int
		start, end int64 // inclusive; end < start: no body check
	}{
		{"bytes=0-99", 206, 0, 99},
		{"bytes=1048500-1048700", 206, 1048500, 1048700}, // data into a hole
		{"bytes=20971000-", 206, 20971000, size - 1},
		{"bytes=-5000", 206, size - 5000, size - 1},
		{"bytes=5-2", 416, 0, -1},
		{fmt.Sprintf("bytes=%d-", size), 416, 0, -1},
		{"bytes=0-1,5-6", 200, 0, size - 1}, // several ranges: served whole
		{"items=0-1", 416, 0, -1},
		{fmt.Sprintf("bytes=%d-%d", size-10, size+1000), 206, size - 10, size - 1},
	}
	for _, c := range cases {
		t.Run(c.rng, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.URL(), nil)
			req.Header.Set("Range", c.rng)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			if c.end < c.start {
				return
			}
			if !bytes.Equal(body, want[c.start:c.end+1]) {
				t.Errorf("body of %d bytes differs from [%d,%d]", len(body), c.start, c.end)
			}
			if c.status == 206 {
				if cr := fmt.Sprintf("bytes %d-%d/%d", c.start, c.end, size); resp.Header.Get("Content-Range") != cr {
					t.Errorf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), cr)
				}
			}
		})
	}
	req, _ := http.NewRequest("HEAD", s.URL(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != size || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("HEAD: %d, length %d, %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
}

func TestConcurrentReaders(t *testing.T) {
	p, want := sparseFile(t)
	s := start(t, p, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half read the whole file, half a range crossing data and holes.
			req, _ := http.NewRequest("GET", s.URL(), nil)
			lo, hi := int64(0), int64(len(want)-1)
			if i%2 == 1 {
				lo, hi = int64(i)<<20, int64(i+20)<<20
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", lo, hi))
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(body, want[lo:hi+1]) {
				errs <- fmt.Errorf("reader %d: content differs", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := s.Stats(); st.Requests != 8 {
		t.Errorf("requests %d", st.Requests)
	}
}

func TestServesNothingElse(t *testing.T) {
	p, _ := sparseFile(t)
	s := start(t, p, Options{})
	base := strings.TrimSuffix(s.URL(), "/disk%20image.raw")
	secretDir := base[strings.LastIndex(base, "/"):]
	root := strings.TrimSuffix(base, secretDir)
	for _, u := range []string{
		root + "/", root + "/disk%20image.raw", base, base + "/", s.URL() + "/", s.URL() + "x",
		base + "/../disk%20image.raw", root + secretDir + "/%2e%2e/" + filepath.Base(filepath.Dir(p)),
		root + "/etc/passwd", base + "/disk image.raw/..",
	} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || strings.Contains(string(body), secretDir[1:]) {
			t.Errorf("%s: status %d, body %q", u, resp.StatusCode, body)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		req, _ := http.NewRequest(m, s.URL(), strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Errorf("%s: status %d", m, resp.StatusCode)
		}
	}
	if st := s.Stats(); st.BytesSent != 0 || st.Refused == 0 {
		t.Errorf("stats %+v", st)
	}
	// After Close nothing answers.
	addr := s.Addr().String()
	s.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

func TestTLS(t *testing.T) {
	p, want := sparseFile(t)
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(cert, certPEM, 0o600)
	os.WriteFile(key, keyPEM, 0o600)
	s := start(t, p, Options{TLSCert: cert, TLSKey: key, PublicHost: "localhost"})
	if !strings.HasPrefix(s.URL(), "https://localhost:") {
		t.Fatalf("URL %s", s.URL())
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", s.URL(), nil)
	req.Header.Set("Range", "bytes=0-1048575")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(body, want[:1<<20]) {
		t.Errorf("HTTPS range: %d, %d bytes", resp.StatusCode, len(body))
	}
	if _, err := Start(p, Options{TLSCert: cert, TLSKey: cert}); err == nil {
		t.Error("a certificate as key was accepted")
	}
}

func selfSigned(t *testing.T) ([]byte, []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		h        string
		start, n int64
		ok       bool
	}{
		{"bytes=0-0", 0, 1, true}, {"bytes=-1", 99, 1, true}, {"bytes=-200", 0, 100, true},
		{"bytes=10-", 10, 90, true}, {"bytes=a-b", 0, 0, false}, {"bytes=-0", 0, 0, false},
		{"bytes=100-", 0, 0, false}, {"bytes", 0, 0, false},
	} {
		s, n, ok := parseRange(c.h, 100)
		if s != c.start || n != c.n || ok != c.ok {
			t.Errorf("parseRange(%q) = %d, %d, %v; want %d, %d, %v", c.h, s, n, ok, c.start, c.n, c.ok)
		}
	}
}

// TestHashWhileServing: a whole GET is hashed from the bytes it sends
// (holes as zeros) with no read of its own; ranges and a cut download
// give no sum.
func TestHashWhileServing(t *testing.T) {
	p, want := sparseFile(t)
	s := start(t, p, Options{Hash: sha256.New})
	if _, err := s.Sum(); !errors.Is(err, ErrNoWholeSend) {
		t.Errorf("Sum before any GET: %v", err)
	}
	get := func(rng string, limit int64) {
		req, _ := http.NewRequest("GET", s.URL(), nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, limit))
		resp.Body.Close()
	}
	get("bytes=0-99", 1<<30)           // a range from 0: not the whole file
	get("", 5<<20)                     // a download cut short
	time.Sleep(200 * time.Millisecond) // the cut reaches the handler
	if _, err := s.Sum(); !errors.Is(err, ErrNoWholeSend) {
		t.Errorf("Sum after a range and a cut download: %v", err)
	}
	get("", 1<<30)
	get("bytes=0-", 1<<30) // a range of all of it is the whole file too
	s.Close()
	sum, err := s.Sum()
	wantSum := sha256.Sum256(want)
	if err != nil || sum != hex.EncodeToString(wantSum[:]) {
		t.Errorf("Sum = %s, %v; want %x", sum, err, wantSum)
	}
	alloc, _ := Allocated(p)
	if st := s.Stats(); st.BytesRead > 3*alloc {
		t.Errorf("%d bytes read for three downloads of %d allocated: hashing read on its own", st.BytesRead, alloc)
	}
}

func TestRedact(t *testing.T) {
	p, _ := sparseFile(t)
	s := start(t, p, Options{})
	secret := strings.Split(s.URL(), "/")[3]
	msg := `400 Bad Request: URI for web-download does not pass filtering: ` + s.URL()
	got := s.Redact(msg)
	if strings.Contains(got, secret) || !strings.Contains(got, "/…/disk%20image.raw") {
		t.Errorf("Redact(%q) = %q", msg, got)
	}
}
