package cloudimport

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Client is the HTTP side shared by the APIs: JSON requests, retried with
// exponential backoff on 429, 5xx but 501 and dropped connections. Other
// answers are final at once: a 4xx will not change by asking again, and a
// 501 (Not Implemented, RFC 9110 §15.6.2) says the server does not do the
// call at all.
type Client struct {
	HTTP       *http.Client
	Retries    int           // retries after the first attempt; 0: 5
	Backoff    time.Duration // first wait; doubles each retry; 0: 1 s
	MaxBackoff time.Duration // 0: 30 s
	Log        func(string)  // retries are reported here (never headers or bodies)
}

// NewClient returns a Client; insecure skips TLS verification.
func NewClient(insecure bool, retries int, log func(string)) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user asked for it
	}
	return &Client{HTTP: &http.Client{Transport: tr, Timeout: 5 * time.Minute}, Retries: retries, Log: log}
}

// HTTPError is a final non-2xx answer.
type HTTPError struct {
	Method, URL string
	Status      int
	Body        string // the start of the body
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.Body)
}

// IsNotFound tells whether err is a 404 answer.
func IsNotFound(err error) bool {
	var he *HTTPError
	return errors.As(err, &he) && he.Status == http.StatusNotFound
}

// Do sends a request with an optional JSON body (in, nil for none) and
// decodes a JSON answer into out (nil to ignore it); an in of type []byte
// is sent as it is, as application/octet-stream. header may be nil.
// It returns the answer's headers.
func (c *Client) Do(ctx context.Context, method, url string, header http.Header, in, out any) (http.Header, error) {
	body, raw := in.([]byte)
	if in != nil && !raw {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return nil, err
		}
	}
	retries := c.Retries
	if retries <= 0 {
		retries = 5
	}
	wait := c.Backoff
	if wait <= 0 {
		wait = time.Second
	}
	maxWait := c.MaxBackoff
	if maxWait <= 0 {
		maxWait = 30 * time.Second
	}
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		for k, vs := range header {
			req.Header[k] = vs
		}
		req.Header.Set("Accept", "application/json")
		if in != nil && req.Header.Get("Content-Type") == "" {
			req.Header.Set("Content-Type", "application/json")
			if raw {
				req.Header.Set("Content-Type", "application/octet-stream")
			}
		}
		resp, err := c.HTTP.Do(req)
		var why string
		switch {
		case err != nil:
			if ctx.Err() != nil || !retryable(err) {
				return nil, fmt.Errorf("%s %s: %w", method, url, err)
			}
			why = err.Error()
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
			why = resp.Status
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && ra > 0 {
				wait = min(time.Duration(ra)*time.Second, maxWait)
			}
			drain(resp)
		default:
			return resp.Header, decode(method, url, resp, out)
		}
		if attempt >= retries {
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w (after %d retries)", method, url, err, retries)
			}
			return nil, &HTTPError{Method: method, URL: url, Status: resp.StatusCode, Body: fmt.Sprintf("(after %d retries)", retries)}
		}
		if c.Log != nil {
			c.Log(fmt.Sprintf("%s %s: %s; retrying in %s (%d/%d)", method, url, why, wait, attempt+1, retries))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s %s: %w", method, url, context.Cause(ctx))
		case <-time.After(wait):
		}
		wait = min(wait*2, maxWait)
	}
}

func decode(method, url string, resp *http.Response, out any) error {
	defer drain(resp)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return &HTTPError{Method: method, URL: url, Status: resp.StatusCode, Body: errorText(b)}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, url, err)
	}
	return nil
}

// errorText is the message of an error answer: the "message" of an
// OpenStack JSON error ({"message": ..., "code": ..., "title": ...}, its
// webob line breaks taken out), else the body as it is.
func errorText(body []byte) string {
	var e struct{ Message string }
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return strings.Join(strings.Fields(strings.ReplaceAll(e.Message, "<br />", " ")), " ")
	}
	return strings.TrimSpace(string(body))
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// retryable tells a dropped or refused connection (worth another try) from
// a request that cannot work (bad URL, TLS).
func retryable(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}
