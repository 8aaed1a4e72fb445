package cloudimport

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProbeURL: a ranged GET that follows redirects and reports the final
// URL, status, size, type and format; off-origin redirects are told; a
// 4xx or 5xx at the end, or no server, is an error naming the final URL.
func TestProbeURL(t *testing.T) {
	qcow := append([]byte("QFI\xfb"), make([]byte, 100<<10)...)
	var ranges []string
	file := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ranges = append(ranges, r.Header.Get("Range"))
		w.Header().Set("Content-Type", "application/x-qemu-disk")
		http.ServeContent(w, r, "x.qcow2", time.Time{}, strings.NewReader(string(qcow)))
	}))
	defer file.Close()
	noRanges := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(qcow)))
		w.Write(qcow)
	}))
	defer noRanges.Close()
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer forbidden.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/file", http.StatusFound)
		case "/file":
			http.ServeContent(w, r, "x.qcow2", time.Time{}, strings.NewReader(string(qcow)))
		case "/other":
			http.Redirect(w, r, file.URL+"/x.qcow2", http.StatusMovedPermanently)
		case "/forbidden":
			http.Redirect(w, r, forbidden.URL+"/x.qcow2", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer redirect.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String() + "/x"
	ln.Close()

	cases := []struct {
		name, url string
		final     string
		offOrigin bool
		size      int64
		wantErr   string
	}{
		{"direct", file.URL + "/x.qcow2", file.URL + "/x.qcow2", false, int64(len(qcow)), ""},
		{"ranges ignored", noRanges.URL + "/x", noRanges.URL + "/x", false, int64(len(qcow)), ""},
		{"same origin", redirect.URL + "/same", redirect.URL + "/file", false, int64(len(qcow)), ""},
		{"other port", redirect.URL + "/other", file.URL + "/x.qcow2", true, int64(len(qcow)), ""},
		{"to a 403", redirect.URL + "/forbidden", "", true, 0, "GET " + forbidden.URL + "/x.qcow2 answered 403 Forbidden"},
		{"redirect loop", redirect.URL + "/loop", "", false, 0, "more than 10 redirects"},
		{"nobody listens", dead, "", false, 0, "GET " + dead + ": "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := ProbeURL(context.Background(), &http.Client{}, c.url, time.Minute)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				if c.offOrigin != p.OffOrigin() {
					t.Errorf("OffOrigin = %v", p.OffOrigin())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Final != c.final || p.OffOrigin() != c.offOrigin || p.Size != c.size || p.Format != "qcow2" || p.Status >= 300 {
				t.Errorf("probe %+v (OffOrigin %v); want final %s, off-origin %v, size %d, qcow2", p, p.OffOrigin(), c.final, c.offOrigin, c.size)
			}
			if s := p.String(); !strings.Contains(s, c.final) || !strings.Contains(s, strconv.FormatInt(c.size, 10)+" bytes") {
				t.Errorf("String() = %q", s)
			}
		})
	}
	if ranges[0] != "bytes=0-"+strconv.Itoa(HeadSize-1) {
		t.Errorf("the probe asked %q, not the head", ranges[0])
	}
}
