package cloudimport

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestGlanceKeystone: the v3 token request for each kind of credential,
// and the image endpoint picked from the catalog by interface and region.
func TestGlanceKeystone(t *testing.T) {
	var got map[string]any
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v3/auth/tokens" {
			http.NotFound(w, r)
			return
		}
		got = nil
		json.NewDecoder(r.Body).Decode(&got)
		w.Header().Set("X-Subject-Token", "issued-token")
		w.WriteHeader(201)
		w.Write([]byte(`{"token":{"catalog":[
			{"type":"compute","endpoints":[{"interface":"public","region":"r1","url":"http://nova"}]},
			{"type":"image","endpoints":[
				{"interface":"internal","region":"r1","url":"http://glance-internal-r1/"},
				{"interface":"public","region":"r1","url":"http://glance-r1/"},
				{"interface":"public","region":"r2","url":"http://glance-r2"}]}]}}`))
	}))
	defer ks.Close()
	cases := []struct {
		name         string
		auth         GlanceAuth
		wantEndpoint string
		wantBody     string // a fragment of the JSON request
		wantErr      string
	}{
		{"password, project by name", GlanceAuth{Username: "u", Password: "pw", ProjectName: "p"}, "http://glance-r1",
			`"password":{"user":{"domain":{"name":"Default"},"name":"u","password":"pw"}}},"scope":{"project":{"domain":{"name":"Default"},"name":"p"}}`, ""},
		{"password, region r2", GlanceAuth{UserID: "uid", Password: "pw", ProjectID: "pid", Region: "r2"}, "http://glance-r2",
			`"user":{"id":"uid","password":"pw"}`, ""},
		{"internal interface", GlanceAuth{Username: "u", Password: "pw", Interface: "internal"}, "http://glance-internal-r1", `"methods":["password"]`, ""},
		{"application credential by id", GlanceAuth{ApplicationCredentialID: "ac", ApplicationCredentialSecret: "s"}, "http://glance-r1",
			`{"auth":{"identity":{"application_credential":{"id":"ac","secret":"s"},"methods":["application_credential"]}}}`, ""},
		{"application credential by name", GlanceAuth{Username: "u", ApplicationCredentialName: "n", ApplicationCredentialSecret: "s"}, "http://glance-r1",
			`"application_credential":{"name":"n","secret":"s","user":{"domain":{"name":"Default"},"name":"u"}}`, ""},
		{"token exchanged", GlanceAuth{Token: "old", ProjectName: "p"}, "http://glance-r1", `"token":{"id":"old"}`, ""},
		{"explicit endpoint wins", GlanceAuth{Username: "u", Password: "pw", Endpoint: "http://mine/"}, "http://mine", "", ""},
		{"no such region", GlanceAuth{Username: "u", Password: "pw", Region: "r9"}, "", "", `no public image endpoint in the catalog (region "r9")`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.auth.AuthURL = ks.URL + "/v3/"
			g := &Glance{Auth: c.auth, Client: NewClient(false, 1, nil)}
			ep, err := g.Endpoint(context.Background())
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || ep != c.wantEndpoint || g.token != "issued-token" {
				t.Fatalf("endpoint %q token %q err %v; want %q", ep, g.token, err, c.wantEndpoint)
			}
			body, _ := json.Marshal(got)
			if !strings.Contains(string(body), c.wantBody) {
				t.Errorf("request %s\nlacks %s", body, c.wantBody)
			}
		})
	}
}
