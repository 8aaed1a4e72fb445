package cloudimport

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFCO follows the endpoints and job states fco.go documents: a fetch
// starts a job that walks through states; each GET of the job moves it one
// step along script. It checks basic auth and the request bodies.
type fakeFCO struct {
	t          *testing.T
	script     []string // job states in order; the last one sticks
	failStatus int      // answered to the first fetch, once (0: none)
	cancelAt   int      // the build is cancelled at this poll (0: never)
	cancel     func()

	mu        sync.Mutex
	step      int
	fetch     map[string]any
	cancelled bool
	deleted   []string
	calls     []string
}

func (f *fakeFCO) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	if u, p, ok := r.BasicAuth(); !(ok && u == "packer/cust-1" && p == "s3cret") && r.Header.Get("X-Auth-Token") != "tok-1" {
		http.Error(w, "unauthorised", 401)
		return
	}
	job := func() map[string]any {
		st := f.script[min(f.step, len(f.script)-1)]
		if f.cancelled {
			st = "CANCELLED"
		}
		j := map[string]any{"resourceUUID": "job-1", "status": st, "itemUUID": "disk-1", "itemType": "DISK"}
		if st == "FAILED" {
			j["errorCode"] = 500
			j["info"] = "checksum mismatch"
		}
		return j
	}
	switch {
	case r.Method == "POST" && r.URL.Path == "/rest/user/current/resources/disk/fetch":
		if f.failStatus != 0 {
			w.WriteHeader(f.failStatus)
			f.failStatus = 0
			return
		}
		json.NewDecoder(r.Body).Decode(&f.fetch)
		json.NewEncoder(w).Encode(job())
	case r.Method == "GET" && r.URL.Path == "/rest/user/current/resources/job/job-1":
		f.step++
		if f.cancelAt > 0 && f.step == f.cancelAt {
			f.cancel()
		}
		json.NewEncoder(w).Encode(job())
	case r.Method == "PUT" && r.URL.Path == "/rest/user/current/resources/job/job-1/cancel":
		f.cancelled = true
		json.NewEncoder(w).Encode(job())
	case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/rest/user/current/resources/"):
		f.deleted = append(f.deleted, strings.TrimPrefix(r.URL.Path, "/rest/user/current/resources/"))
		json.NewEncoder(w).Encode(map[string]any{"resourceUUID": "job-2", "status": "SUCCESSFUL"})
	default:
		http.NotFound(w, r)
	}
}

func TestFCO(t *testing.T) {
	src := Source{URL: "http://10.0.0.1:8080/secret/disk.qcow2", Checksum: Checksum{"sha256", strings.Repeat("ab", 32)}}
	spec := Spec{Name: "factory-image", Size: 5 << 30}
	cases := []struct {
		name       string
		script     []string
		failStatus int
		token      bool
		makeImage  bool
		cancelAt   int // cancel the context after this many polls (0: never)
		wantErr    string
		wantDelete []string
		wantCancel bool
	}{
		{name: "successful", script: []string{"NOT_STARTED", "IN_PROGRESS", "WAITING", "SUSPENDED", "IN_PROGRESS", "SUCCESSFUL"}},
		{name: "token, image, 503 then success", failStatus: 503, token: true, makeImage: true, script: []string{"IN_PROGRESS", "SUCCESSFUL"}},
		{name: "failed job", script: []string{"IN_PROGRESS", "FAILED"}, wantErr: "checksum mismatch", wantDelete: []string{"disk/disk-1"}},
		{name: "cancelled by the cloud", script: []string{"IN_PROGRESS", "CANCELLED"}, wantErr: "CANCELLED", wantDelete: []string{"disk/disk-1"}},
		{name: "build cancelled", script: []string{"IN_PROGRESS"}, cancelAt: 2, wantErr: "context canceled", wantDelete: []string{"disk/disk-1"}, wantCancel: true},
		{name: "bad request", failStatus: 400, script: []string{"IN_PROGRESS"}, wantErr: "400"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			fake := &fakeFCO{t: t, script: c.script, failStatus: c.failStatus, cancelAt: c.cancelAt, cancel: cancel}
			ts := httptest.NewServer(fake)
			defer ts.Close()
			cl := NewClient(false, 3, nil)
			cl.Backoff = time.Millisecond
			api := &FCO{Endpoint: ts.URL, Username: "packer", CustomerUUID: "cust-1", Password: "s3cret",
				VDCUUID: "vdc-1", ClusterUUID: "cl-1", ProductOfferUUID: "po-1", MakeImage: c.makeImage, Client: cl}
			if c.token {
				api.Password, api.Token = "", "tok-1"
			}
			imp, err := Run(ctx, api, spec, src, Options{PollInterval: time.Millisecond})
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if fmt.Sprint(fake.deleted) != fmt.Sprint(c.wantDelete) && !(len(c.wantDelete) == 0 && len(fake.deleted) == 0) {
				t.Errorf("deleted %v, want %v", fake.deleted, c.wantDelete)
			}
			if fake.cancelled != c.wantCancel {
				t.Errorf("job cancelled = %v, want %v (calls %v)", fake.cancelled, c.wantCancel, fake.calls)
			}
			if c.failStatus == 400 {
				return
			}
			if imp.JobID != "job-1" || imp.ImageID != "disk-1" {
				t.Errorf("import %+v", imp)
			}
			sk, _ := fake.fetch["skeletonDisk"].(map[string]any)
			fp, _ := fake.fetch["fetchParameters"].(map[string]any)
			if sk["resourceName"] != "factory-image" || sk["size"] != float64(5) || sk["vdcUUID"] != "vdc-1" ||
				sk["clusterUUID"] != "cl-1" || sk["productOfferUUID"] != "po-1" || sk["resourceType"] != "DISK" {
				t.Errorf("skeletonDisk %v", sk)
			}
			if fp["url"] != src.URL || fp["checkSum"] != src.Checksum.Value || fp["makeImage"] != c.makeImage {
				t.Errorf("fetchParameters %v", fp)
			}
		})
	}
}
