package cloudimport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// GlanceAuth says how to reach Glance: through Keystone v3 (AuthURL with a
// password or an application credential), with a Token and Endpoint, or
// with an Endpoint alone (no authentication).
type GlanceAuth struct {
	AuthURL                          string
	Username, UserID, UserDomainName string
	Password                         string
	ProjectName, ProjectID           string
	ProjectDomainName                string
	ApplicationCredentialID          string
	ApplicationCredentialName        string
	ApplicationCredentialSecret      string
	Region                           string
	Interface                        string // public (default), internal, admin
	Token                            string
	Endpoint                         string // the image service's URL; found in the catalog when empty
}

// Glance is OpenStack Glance's interoperable import (method web-download).
type Glance struct {
	Auth   GlanceAuth
	Client *Client

	mu       sync.Mutex
	token    string
	endpoint string
}

// Name is "glance".
func (g *Glance) Name() string { return "glance" }

// Endpoint is the image service's URL (after authentication).
func (g *Glance) Endpoint(ctx context.Context) (string, error) {
	if err := g.login(ctx); err != nil {
		return "", err
	}
	return g.endpoint, nil
}

// login gets a token and the endpoint once.
func (g *Glance) login(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.endpoint != "" {
		return nil
	}
	a := g.Auth
	if a.AuthURL == "" {
		if a.Endpoint == "" {
			return errors.New("glance: neither auth_url nor endpoint is set")
		}
		g.token, g.endpoint = a.Token, strings.TrimRight(a.Endpoint, "/")
		return nil
	}
	var identity map[string]any
	switch {
	case a.ApplicationCredentialSecret != "":
		cred := map[string]any{"secret": a.ApplicationCredentialSecret}
		if a.ApplicationCredentialID != "" {
			cred["id"] = a.ApplicationCredentialID
		} else {
			cred["name"] = a.ApplicationCredentialName
			cred["user"] = user(a)
		}
		identity = map[string]any{"methods": []string{"application_credential"}, "application_credential": cred}
	case a.Token != "":
		identity = map[string]any{"methods": []string{"token"}, "token": map[string]any{"id": a.Token}}
	default:
		u := user(a)
		u["password"] = a.Password
		identity = map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": u}}
	}
	authBody := map[string]any{"identity": identity}
	if a.ApplicationCredentialSecret == "" && (a.ProjectID != "" || a.ProjectName != "") {
		p := map[string]any{}
		if a.ProjectID != "" {
			p["id"] = a.ProjectID
		} else {
			p["name"] = a.ProjectName
			p["domain"] = map[string]any{"name": orDefault(a.ProjectDomainName, "Default")}
		}
		authBody["scope"] = map[string]any{"project": p}
	}
	var out struct {
		Token struct {
			Catalog []struct {
				Type      string
				Endpoints []struct{ Interface, Region, URL string }
			}
		}
	}
	hdr, err := g.Client.Do(ctx, "POST", strings.TrimRight(a.AuthURL, "/")+"/auth/tokens", nil, map[string]any{"auth": authBody}, &out)
	if err != nil {
		return fmt.Errorf("keystone: %w", err)
	}
	g.token = hdr.Get("X-Subject-Token")
	if g.token == "" {
		return errors.New("keystone: the answer carries no X-Subject-Token")
	}
	if a.Endpoint != "" {
		g.endpoint = strings.TrimRight(a.Endpoint, "/")
		return nil
	}
	iface := orDefault(a.Interface, "public")
	for _, s := range out.Token.Catalog {
		if s.Type != "image" {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Interface == iface && (a.Region == "" || e.Region == a.Region) {
				g.endpoint = strings.TrimRight(e.URL, "/")
				return nil
			}
		}
	}
	return fmt.Errorf("keystone: no %s image endpoint in the catalog (region %q)", iface, a.Region)
}

func user(a GlanceAuth) map[string]any {
	if a.UserID != "" {
		return map[string]any{"id": a.UserID}
	}
	return map[string]any{"name": a.Username, "domain": map[string]any{"name": orDefault(a.UserDomainName, "Default")}}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func (g *Glance) do(ctx context.Context, method, path string, hdr http.Header, in, out any) (http.Header, error) {
	if err := g.login(ctx); err != nil {
		return nil, err
	}
	if hdr == nil {
		hdr = http.Header{}
	}
	if g.token != "" {
		hdr.Set("X-Auth-Token", g.token)
	}
	return g.Client.Do(ctx, method, g.endpoint+path, hdr, in, out)
}

// glanceImage is the part of an image record we read.
type glanceImage struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	Checksum     string `json:"checksum"`
	HashAlgo     string `json:"os_hash_algo"`
	HashValue    string `json:"os_hash_value"`
	FailedImport string `json:"os_glance_failed_import"`
	Importing    string `json:"os_glance_importing_to_stores"`
	Size         int64  `json:"size"`
	// Glance's own import properties (os_glance_import_task,
	// os_glance_importing_to_stores...), as "key=value", sorted.
	GlanceProps []string `json:"-"`
}

// state is the image's status with Glance's os_glance_* properties, for
// messages: "importing (os_glance_importing_to_stores=fs, ...)".
func (img glanceImage) state() string {
	if len(img.GlanceProps) == 0 {
		return img.Status
	}
	return img.Status + " (" + strings.Join(img.GlanceProps, ", ") + ")"
}

// reserved are image fields a property may not override.
var reserved = map[string]bool{"name": true, "disk_format": true, "container_format": true, "visibility": true, "tags": true, "id": true, "status": true}

// Create makes the image record.
func (g *Glance) Create(ctx context.Context, imp *Import, spec Spec) error {
	body := map[string]any{
		"name":             spec.Name,
		"disk_format":      spec.DiskFormat,
		"container_format": orDefault(spec.ContainerFormat, "bare"),
		"visibility":       orDefault(spec.Visibility, "private"),
	}
	if len(spec.Tags) > 0 {
		body["tags"] = spec.Tags
	}
	for k, v := range spec.Properties {
		if reserved[k] {
			return fmt.Errorf("property %q is an image field, not a property", k)
		}
		body[k] = v
	}
	var img glanceImage
	if _, err := g.do(ctx, "POST", "/v2/images", nil, body, &img); err != nil {
		return err
	}
	if img.ID == "" {
		return errors.New("the answer names no image ID")
	}
	imp.ImageID = img.ID
	return nil
}

// Start asks Glance to fetch the disk (web-download).
func (g *Glance) Start(ctx context.Context, imp *Import, _ Spec, src Source) error {
	body := map[string]any{"method": map[string]any{"name": "web-download", "uri": src.URL}}
	_, err := g.do(ctx, "POST", "/v2/images/"+url.PathEscape(imp.ImageID)+"/import", nil, body, nil)
	return err
}

func (g *Glance) image(ctx context.Context, id string) (glanceImage, error) {
	var raw json.RawMessage
	var img glanceImage
	if _, err := g.do(ctx, "GET", "/v2/images/"+url.PathEscape(id), nil, nil, &raw); err != nil {
		return img, err
	}
	var all map[string]any
	if err := json.Unmarshal(raw, &img); err != nil {
		return img, fmt.Errorf("image %s: %w", id, err)
	}
	json.Unmarshal(raw, &all)
	for k, v := range all {
		if strings.HasPrefix(k, "os_glance_") && v != nil && v != "" {
			img.GlanceProps = append(img.GlanceProps, fmt.Sprintf("%s=%v", k, v))
		}
	}
	sort.Strings(img.GlanceProps)
	return img, nil
}

// Poll reads the image's status. Glance answers 202 even when the download
// fails; the failure shows in os_glance_failed_import and the task, while
// the image falls back to queued.
func (g *Glance) Poll(ctx context.Context, imp *Import) (Status, error) {
	img, err := g.image(ctx, imp.ImageID)
	if err != nil {
		return Status{}, err
	}
	st := Status{State: Running, Detail: img.state()}
	switch img.Status {
	case "active":
		st.State = Done
		return st, nil
	case "killed", "deleted", "pending_delete":
		st.State = Failed
	}
	if img.FailedImport != "" {
		st.State = Failed
		st.Message = "failed to import to store " + img.FailedImport
	}
	if img.Status == "queued" && st.State == Running {
		// The task may have failed before the image says so.
		if msg, failed := g.taskFailure(ctx, imp.ImageID); failed {
			st.State, st.Message = Failed, msg
		}
	}
	if st.State == Failed {
		if msg, _ := g.taskFailure(ctx, imp.ImageID); msg != "" {
			st.Message = strings.TrimPrefix(st.Message+": ", ": ") + msg
		}
	}
	return st, nil
}

// taskFailure returns the newest import task's message and whether it failed.
func (g *Glance) taskFailure(ctx context.Context, id string) (string, bool) {
	var out struct {
		Tasks []struct {
			Status, Message string
			UpdatedAt       string `json:"updated_at"`
		}
	}
	hdr := http.Header{"Openstack-Api-Version": {"image 2.12"}}
	if _, err := g.do(ctx, "GET", "/v2/images/"+url.PathEscape(id)+"/tasks", hdr, nil, &out); err != nil {
		return "", false
	}
	if len(out.Tasks) == 0 {
		return "", false
	}
	sort.Slice(out.Tasks, func(i, j int) bool { return out.Tasks[i].UpdatedAt > out.Tasks[j].UpdatedAt })
	t := out.Tasks[0]
	return t.Message, t.Status == "failure"
}

// Verify compares Glance's os_hash_value, in Glance's own os_hash_algo,
// with the source's checksum in that algorithm (src.SumIn). A Glance older
// than Rocky, with no os_hash_algo, is compared by its md5 checksum.
func (g *Glance) Verify(ctx context.Context, imp *Import, src Source) error {
	img, err := g.image(ctx, imp.ImageID)
	if err != nil {
		return err
	}
	algo, have := strings.ToLower(img.HashAlgo), strings.ToLower(img.HashValue)
	if algo == "" {
		algo, have = "md5", strings.ToLower(img.Checksum)
	}
	if have == "" {
		return errors.New("the image carries no hash (os_hash_value, checksum) to compare with")
	}
	want, err := src.SumIn(ctx, algo)
	if err != nil {
		return err
	}
	if have != want.Value {
		return fmt.Errorf("checksum mismatch: Glance holds %s %s, the source has %s", algo, have, want.Value)
	}
	return nil
}

// HashAlgo is the algorithm Glance hashes image data with (its
// hashing_algorithm option, reported as os_hash_algo; sha512 unless the
// operator changed it). An image record has none until data is uploaded,
// so it uploads one byte to a private probe image and deletes the probe.
func (g *Glance) HashAlgo(ctx context.Context) (string, error) {
	var img glanceImage
	body := map[string]any{"name": "imagefactory-hash-probe", "disk_format": "raw", "container_format": "bare", "visibility": "private"}
	if _, err := g.do(ctx, "POST", "/v2/images", nil, body, &img); err != nil {
		return "", fmt.Errorf("creating the probe image: %w", err)
	}
	path := "/v2/images/" + url.PathEscape(img.ID)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if _, err := g.do(cctx, "DELETE", path, nil, nil, nil); err != nil && !IsNotFound(err) && g.Client.Log != nil {
			g.Client.Log(fmt.Sprintf("deleting the probe image %s failed (delete it by hand): %v", img.ID, err))
		}
	}()
	if _, err := g.do(ctx, "PUT", path+"/file", nil, []byte{0}, nil); err != nil {
		return "", fmt.Errorf("uploading one byte to the probe image: %w", err)
	}
	if img, err := g.image(ctx, img.ID); err != nil {
		return "", err
	} else if img.HashAlgo == "" {
		return "", fmt.Errorf("the probe image (%s) reports no os_hash_algo", img.state())
	} else {
		return strings.ToLower(img.HashAlgo), nil
	}
}

// Cancel: Glance has no call to stop an import; deleting the image does.
func (g *Glance) Cancel(context.Context, *Import) error { return nil }

// Delete removes the image.
func (g *Glance) Delete(ctx context.Context, imp *Import) error {
	_, err := g.do(ctx, "DELETE", "/v2/images/"+url.PathEscape(imp.ImageID), nil, nil, nil)
	if IsNotFound(err) {
		return nil
	}
	return err
}
