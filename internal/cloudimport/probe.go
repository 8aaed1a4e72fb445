package cloudimport

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Probe is what a URL the cloud is to fetch answered us.
type Probe struct {
	URL         string   // as given
	Final       string   // after the redirects
	Redirects   []string // the URLs redirected to, in order (Final last)
	Status      int      // the final answer's status
	Size        int64    // the whole file's size; -1 when not said
	ContentType string
	Head        []byte // the first bytes (up to HeadSize)
	Format      string // ContentFormat of Head
}

// OffOrigin tells whether the redirects end on another scheme, host or port
// than the URL given: Glance's import filtering (allowed_hosts,
// allowed_ports... of [import_filtering_opts]) judges that origin anew.
func (p Probe) OffOrigin() bool {
	a, err1 := url.Parse(p.URL)
	b, err2 := url.Parse(p.Final)
	if err1 != nil || err2 != nil {
		return true
	}
	return a.Scheme != b.Scheme || a.Hostname() != b.Hostname() || port(a) != port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

func (p Probe) String() string {
	size := "size not said"
	if p.Size >= 0 {
		size = fmt.Sprintf("%d bytes", p.Size)
	}
	where := p.Final
	if len(p.Redirects) > 0 {
		where = fmt.Sprintf("%s redirects (%d hops) to %s", p.URL, len(p.Redirects), p.Final)
	}
	return fmt.Sprintf("%s: %d %s, %s, %s, content %s", where, p.Status, http.StatusText(p.Status),
		size, orDefault(p.ContentType, "no content type"), p.Format)
}

// maxRedirects is Go's and urllib's own limit (10).
const maxRedirects = 10

// ProbeURL asks u for its first HeadSize bytes (GET with a Range; a server
// that ignores ranges is read no further than that), following redirects,
// before a cloud is told to fetch it. A 4xx or 5xx answer, or no answer,
// is an error naming the final URL. The probe gives up after timeout.
func ProbeURL(ctx context.Context, client *http.Client, u string, timeout time.Duration) (Probe, error) {
	p := Probe{URL: u, Final: u, Size: -1}
	c := *client
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("more than %d redirects", maxRedirects)
		}
		p.Redirects = append(p.Redirects, req.URL.String())
		p.Final = req.URL.String()
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return p, fmt.Errorf("image_url %q: %w", u, err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=0-%d", HeadSize-1))
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return p, fmt.Errorf("image_url: GET %s: %w", p.Final, err)
	}
	defer resp.Body.Close()
	p.Status, p.ContentType = resp.StatusCode, resp.Header.Get("Content-Type")
	if resp.StatusCode >= 400 {
		return p, fmt.Errorf("image_url: GET %s answered %d %s: the cloud would fail to fetch it", p.Final, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if _, total, ok := strings.Cut(resp.Header.Get("Content-Range"), "/"); ok {
			if n, err := strconv.ParseInt(total, 10, 64); err == nil {
				p.Size = n
			}
		}
	case http.StatusOK:
		p.Size = resp.ContentLength
	default:
		return p, fmt.Errorf("image_url: GET %s answered %d %s, not the file", p.Final, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	p.Head = make([]byte, HeadSize)
	n, err := io.ReadFull(resp.Body, p.Head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return p, fmt.Errorf("image_url: reading the start of %s: %w", p.Final, err)
	}
	p.Head = p.Head[:n]
	p.Format = ContentFormat(p.Head)
	return p, nil
}

// HashURL downloads u once and returns its checksum in each of algos, and
// its length.
func HashURL(ctx context.Context, client *http.Client, u string, algos ...string) (map[string]string, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	ws := make([]io.Writer, len(algos))
	hs := make(map[string]interface{ Sum([]byte) []byte }, len(algos))
	for i, a := range algos {
		h, err := NewHash(a)
		if err != nil {
			return nil, 0, err
		}
		ws[i], hs[a] = h, h
	}
	n, err := io.CopyBuffer(io.MultiWriter(ws...), resp.Body, make([]byte, 1<<20))
	if err != nil {
		return nil, n, fmt.Errorf("GET %s: %w", u, err)
	}
	out := make(map[string]string, len(algos))
	for a, h := range hs {
		out[a] = hex.EncodeToString(h.Sum(nil))
	}
	return out, n, nil
}
