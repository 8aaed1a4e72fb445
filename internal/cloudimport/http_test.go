package cloudimport

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestClientRetries: 429, 5xx but 501 and dropped connections are retried
// with backoff; 4xx and 501 are not; retries end.
func TestClientRetries(t *testing.T) {
	cases := []struct {
		name     string
		failures []int // per attempt: an HTTP status, or -1 to drop the connection
		wantErr  string
		calls    int32
	}{
		{"ok", nil, "", 1},
		{"429 then ok", []int{429}, "", 2},
		{"500 twice then ok", []int{500, 503}, "", 3},
		{"dropped connection then ok", []int{-1, -1}, "", 3},
		{"404 is final", []int{404}, "404 Not Found", 1},
		{"501 is final", []int{501}, "501 Not Implemented", 1},
		{"retries run out", []int{500, 500, 500, 500}, "500 Internal Server Error: (after 3 retries)", 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var calls atomic.Int32
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1)) - 1
				if n < len(c.failures) {
					switch s := c.failures[n]; s {
					case -1:
						conn, _, _ := w.(http.Hijacker).Hijack()
						conn.Close()
					case 429:
						w.Header().Set("Retry-After", "0")
						w.WriteHeader(s)
					default:
						w.WriteHeader(s)
					}
					return
				}
				w.Write([]byte(`{"id":"x"}`))
			}))
			defer ts.Close()
			var logs []string
			cl := &Client{HTTP: ts.Client(), Retries: 3, Backoff: time.Millisecond, Log: func(s string) { logs = append(logs, s) }}
			var out struct{ ID string }
			_, err := cl.Do(context.Background(), "POST", ts.URL+"/v2/images", nil, map[string]string{"a": "b"}, &out)
			if c.wantErr == "" && (err != nil || out.ID != "x") || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v (out %+v), want %q", err, out, c.wantErr)
			}
			if calls.Load() != c.calls {
				t.Errorf("%d calls, want %d", calls.Load(), c.calls)
			}
			if want := int(c.calls) - 1; c.wantErr == "" && len(logs) != want {
				t.Errorf("%d retry messages, want %d: %q", len(logs), want, logs)
			}
		})
	}
	// Cancelling the context ends the waiting.
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	cl := &Client{HTTP: ts.Client(), Retries: 100, Backoff: 20 * time.Millisecond}
	if _, err := cl.Do(ctx, "GET", ts.URL, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("cancelled: %v", err)
	}
}

// TestErrorText: an OpenStack JSON error gives its message, webob's line
// breaks taken out; another body is kept as it is.
func TestErrorText(t *testing.T) {
	cases := map[string]string{
		`{"message": "URI for web-download does not pass filtering: http://h:1/x<br /><br />\n\n\n", "code": "400 Bad Request", "title": "Bad Request"}`: "URI for web-download does not pass filtering: http://h:1/x",
		"  injected failure\n": "injected failure",
		`{"code": 1}`:          `{"code": 1}`,
	}
	for body, want := range cases {
		if got := errorText([]byte(body)); got != want {
			t.Errorf("errorText(%q) = %q, want %q", body, got, want)
		}
	}
}
