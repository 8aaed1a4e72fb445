package boottest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// retry is the pause between two tries of a wait.
const retry = 2 * time.Second

// waitTCP waits until the guest accepts a connection on port. QEMU's user
// networking accepts every connection to a forwarded port at once and only
// then connects to the guest, so a connect proves nothing: the guest's
// side of it must be ESTABLISHED in slirp's socket table (the monitor's
// "info usernet", libslirp's slirp_connection_info), and a refusal by the
// guest closes the host's side.
func (t *run) waitTCP(ctx context.Context, w *wait, port int) {
	hp := t.ports[port]
	established := regexp.MustCompile(fmt.Sprintf(`TCP\[ESTABLISHED\]\s+-?\d+\s+\S+\s+%d\s+\S+\s+%d\s`, hp, port))
	t.poll(ctx, w, func() (bool, string) { return t.tryTCP(ctx, hp, established) })
}

// poll tries a wait every retry until it is met or ctx ends.
func (t *run) poll(ctx context.Context, w *wait, try func() (bool, string)) {
	for {
		ok, last := try()
		t.setWait(w, ok, last)
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

func (t *run) tryTCP(ctx context.Context, hp int, established *regexp.Regexp) (bool, string) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", hp))
	if err != nil {
		return false, err.Error()
	}
	defer conn.Close()
	closed := make(chan struct{})
	go func() {
		// Data or EOF: a refusal closes the host's side; data proves the
		// guest answered.
		buf := make([]byte, 1)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := conn.Read(buf); n == 0 && err != nil && !isTimeout(err) {
			close(closed)
		}
	}()
	for range 20 {
		select {
		case <-closed:
			return false, "the guest refused the connection"
		case <-ctx.Done():
			return false, ctx.Err().Error()
		case <-time.After(250 * time.Millisecond):
		}
		table, err := t.m.HMP("info usernet")
		if err != nil {
			return false, "info usernet: " + err.Error()
		}
		if established.MatchString(table) {
			return true, ""
		}
	}
	return false, "the guest did not answer the connection within 5s"
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// waitHTTP asks until the guest answers h's URL with its status and body.
func (t *run) waitHTTP(ctx context.Context, w *wait, h HTTPCheck, hostPort int) {
	want := h.Status
	if want == 0 {
		want = http.StatusOK
	}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			// Every request goes to the forwarded port; the URL's host is
			// the Host header (and the TLS server name).
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", hostPort))
			},
			// The guest's certificate is its own, often self-signed; what
			// is tested is that it serves.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.poll(ctx, w, func() (bool, string) { return tryHTTP(ctx, client, h.URL, want, h.BodyContains) })
}

func tryHTTP(ctx context.Context, c *http.Client, url string, status int, contains string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return false, fmt.Sprintf("status %d, reading the body: %v", resp.StatusCode, err)
	}
	if resp.StatusCode != status {
		return false, fmt.Sprintf("status %d, want %d", resp.StatusCode, status)
	}
	if contains != "" && !strings.Contains(string(body), contains) {
		return false, fmt.Sprintf("status %d, but the body (%d bytes) lacks %q", resp.StatusCode, len(body), contains)
	}
	return true, ""
}
