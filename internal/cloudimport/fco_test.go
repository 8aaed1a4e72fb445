package cloudimport

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fcoServer is an FCO REST user API (version "current") written from FCO's
// published reference, not from fco.go. docs.flexiant.com itself is not in
// the stored corpora searched for issue 20; the best public sources found,
// each a copy or a user of Flexiant's own reference:
//
//   - docs.flexiant.com's REST pages ("REST User API Methods", "REST Complex
//     Objects", "REST Enum Values", http://docs.flexiant.com/display/DOCS/REST+Job,
//     .../REST+Disk), scraped in 2015 by generators/miner.py into
//     github.com/buhanec/cloudify-flexiant-plugin resttypes/endpoints.py,
//     cobjects.py and enums.py: the routes and verbs (fetchDisk
//     `GET resources/fetch/disk` with data skeletonDisk, fetchParameters,
//     when; getResource `GET resources/{resourceType}/{resourceUUID}`;
//     waitForJob `GET resources/job/{jobUUID}/wait` with noWaitForChildren;
//     cancelJob `PUT resources/job/{JobUUID}/cancel`; deleteResource
//     `DELETE resources/{resourceType}/{resourceUUID}`), the fields of Job,
//     Disk and FetchParameters, and the values of JobStatus, JobType
//     (FETCH_DISK, FETCH_IMAGE), ResourceState and DiskStatus.
//   - Flexiant's UserAPI WSDL and schema (namespace extility.flexiant.net),
//     shipped in github.com/greese/dasein-cloud-flexiant
//     src/main/resources/UserAPI.wsdl and UserAPI_schema1.xsd: Job.errorCode
//     is an xs:string, "null if the job was successful or has not yet
//     completed"; Disk.size is an xs:long, "The capacity of the disk";
//     errors are ExtilityExceptionInfo {errorCode, errorType, message};
//     fetchDisk "On an exception, the resource is not created".
//   - How FCO REST clients talk to it: basic authentication as
//     "user/customerUUID" (XLAB's fcoclient client.py,
//     cloudify-flexiant-plugin fcoclient/clients.py) or with an API token as
//     the user name and an empty password (APITokenRESTClient there); a
//     create answered 202 with a Job (fcoclient's DiskClient.create); error
//     bodies read for "message" (clients.py); disk sizes in GB (fcoclient's
//     Disk: "size (int): Disk size (in GB)"; dasein's FCOVolumeSupport:
//     Storage.valueOf(disk.getSize(), "gigabyte")).
//
// The server is a small cloud: it holds a VDC, a product offer, jobs and
// disks (or images). A fetch makes a job and a CREATING item; each read of
// the job moves it along script; at the script's end the job ends, the way
// finish says. FCO checks checkSum itself: a fetch whose checkSum is not
// served's fails its job, as the platform's check would.
type fcoServer struct {
	script []string         // job states read in turn; the last one ends the job
	served string           // the checksum of the bytes at the URL
	finish func(*fcoServer) // the cloud's last word, after the job ends (nil: a clean end)
	fail   int              // an HTTP status answered once to the fetch (0: none)
	cancel func()           // called at the cancelAt-th read of the job
	at     int

	mu     sync.Mutex
	reads  int
	job    map[string]any
	item   map[string]any
	fetch  map[string]any
	calls  []string
	delete []string
}

const (
	fcoVDC    = "0b8f8d8e-vdc1"
	fcoOffer  = "5c2e9f3a-po1"
	fcoJobID  = "7d4c1a2b-job1"
	fcoItemID = "9a1b2c3d-disk1"
)

// fcoError writes an ExtilityExceptionInfo body.
func fcoError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"errorCode": code, "errorType": "ExtilityException", "message": msg})
}

func fcoJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

var fcoRoute = regexp.MustCompile(`^/rest/user/current/resources/(?:(VDC|PRODUCTOFFER|JOB|DISK|IMAGE)/([^/]+)|job/([^/]+)/(wait|cancel)|fetch/disk)$`)

func (s *fcoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, r.Method+" "+r.URL.Path)
	u, p, ok := r.BasicAuth()
	if !ok || !(u == "packer/cust-1" && p == "s3cret" || u == "tok-1" && p == "") {
		fcoError(w, http.StatusUnauthorized, "NOT_AUTHORIZED", "authentication failed")
		return
	}
	m := fcoRoute.FindStringSubmatch(r.URL.Path)
	switch {
	case m == nil:
		fcoError(w, http.StatusNotFound, "NOT_FOUND", "no such method")
	case r.URL.Path == "/rest/user/current/resources/fetch/disk" && r.Method == "GET":
		s.fetchDisk(w, r)
	case m[4] == "wait" && r.Method == "GET":
		if m[3] != fcoJobID || s.job == nil {
			fcoError(w, http.StatusNotFound, "NOT_FOUND", "no job "+m[3])
			return
		}
		if q := r.URL.Query().Get("noWaitForChildren"); q != "" && q != "false" && q != "true" {
			fcoError(w, http.StatusBadRequest, "INVALID_PARAMETER", "noWaitForChildren must be a boolean")
			return
		}
		for !s.ended() {
			s.step()
		}
		fcoJSON(w, http.StatusOK, s.job)
	case m[4] == "cancel" && r.Method == "PUT":
		if m[3] != fcoJobID || s.job == nil {
			fcoError(w, http.StatusNotFound, "NOT_FOUND", "no job "+m[3])
			return
		}
		if !s.ended() {
			s.job["status"] = "CANCELLED"
		}
		fcoJSON(w, http.StatusOK, s.job)
	case r.Method == "GET" && m[1] != "":
		s.get(w, m[1], m[2])
	case r.Method == "DELETE" && (m[1] == "DISK" || m[1] == "IMAGE"):
		if s.item == nil || m[2] != fcoItemID || s.item["resourceType"] != m[1] {
			fcoError(w, http.StatusNotFound, "NOT_FOUND", "no "+m[1]+" "+m[2])
			return
		}
		s.delete = append(s.delete, m[1]+"/"+m[2])
		s.item = nil
		fcoJSON(w, http.StatusAccepted, map[string]any{"resourceUUID": "7d4c1a2b-job2", "resourceType": "JOB",
			"status": "IN_PROGRESS", "jobType": "DELETE_RESOURCE", "itemUUID": m[2], "itemType": m[1]})
	default:
		fcoError(w, http.StatusMethodNotAllowed, "NOT_ALLOWED", r.Method+" is not allowed on "+r.URL.Path)
	}
}

// fetchDisk checks the data as the reference requires it (skeletonDisk
// and fetchParameters required; url required; the VDC and product offer
// must exist) and makes the job and the item.
func (s *fcoServer) fetchDisk(w http.ResponseWriter, r *http.Request) {
	if s.fail != 0 {
		w.WriteHeader(s.fail)
		s.fail = 0
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fcoError(w, http.StatusBadRequest, "INVALID_PARAMETER", "cannot read the request: "+err.Error())
		return
	}
	sk, _ := body["skeletonDisk"].(map[string]any)
	fp, _ := body["fetchParameters"].(map[string]any)
	switch {
	case sk == nil || fp == nil:
		fcoError(w, http.StatusBadRequest, "INVALID_PARAMETER", "skeletonDisk and fetchParameters are required")
		return
	case fp["url"] == nil || fp["url"] == "":
		fcoError(w, http.StatusBadRequest, "INVALID_PARAMETER", "fetchParameters.url is required")
		return
	case sk["vdcUUID"] != fcoVDC || sk["productOfferUUID"] != fcoOffer:
		fcoError(w, http.StatusBadRequest, "INVALID_RESOURCE", "no such VDC or product offer")
		return
	}
	s.fetch = body
	size, _ := sk["size"].(float64)
	typ, jobType := "DISK", "FETCH_DISK"
	if fp["makeImage"] == true {
		typ, jobType = "IMAGE", "FETCH_IMAGE"
	}
	s.item = map[string]any{"resourceUUID": fcoItemID, "resourceType": typ, "resourceName": sk["resourceName"],
		"resourceState": "CREATING", "size": int64(size), "vdcUUID": fcoVDC}
	if typ == "DISK" {
		s.item["status"] = "CANNOT_BE_ATTACHED_TO_SERVER"
	}
	s.job = map[string]any{"resourceUUID": fcoJobID, "resourceType": "JOB", "status": "NOT_STARTED", "jobType": jobType,
		"itemUUID": fcoItemID, "itemType": typ, "scheduled": false, "errorCode": nil, "info": ""}
	fcoJSON(w, http.StatusAccepted, s.job)
}

func (s *fcoServer) ended() bool {
	st := s.job["status"]
	return st == "SUCCESSFUL" || st == "FAILED" || st == "CANCELLED"
}

// step moves the job to its next state; the last state ends it, with the
// platform's own checksum check first.
func (s *fcoServer) step() {
	if s.ended() {
		return
	}
	s.reads++
	st := s.script[min(s.reads, len(s.script))-1]
	s.job["status"] = st
	if s.reads < len(s.script) {
		return
	}
	if fp, _ := s.fetch["fetchParameters"].(map[string]any); st == "SUCCESSFUL" && fp["checkSum"] != s.served {
		s.job["status"], s.job["errorCode"] = "FAILED", "CHECKSUM_MISMATCH"
		s.job["info"] = fmt.Sprintf("checksum of the fetched object %s does not match %v", s.served, fp["checkSum"])
		return
	}
	if st == "SUCCESSFUL" && s.item != nil {
		s.item["resourceState"] = "ACTIVE"
		if s.item["resourceType"] == "DISK" {
			s.item["status"] = "NOT_ATTACHED_TO_SERVER"
		}
	}
	if s.finish != nil {
		s.finish(s)
	}
}

func (s *fcoServer) get(w http.ResponseWriter, typ, uuid string) {
	switch {
	case typ == "VDC" && uuid == fcoVDC, typ == "PRODUCTOFFER" && uuid == fcoOffer:
		fcoJSON(w, http.StatusOK, map[string]any{"resourceUUID": uuid, "resourceType": typ, "resourceState": "ACTIVE"})
	case typ == "JOB" && uuid == fcoJobID && s.job != nil:
		if s.at > 0 && s.reads+1 == s.at {
			s.cancel()
		}
		s.step()
		fcoJSON(w, http.StatusOK, s.job)
	case (typ == "DISK" || typ == "IMAGE") && s.item != nil && uuid == s.item["resourceUUID"] && typ == s.item["resourceType"]:
		fcoJSON(w, http.StatusOK, s.item)
	default:
		fcoError(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no %s %s", typ, uuid))
	}
}

func TestFCO(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	src := Source{URL: "http://10.0.0.1:8080/secret/disk.qcow2", Checksum: Checksum{"sha256", sum}}
	spec := Spec{Name: "factory-image", Size: 5<<30 - 512} // 5 GB once rounded up
	ok := []string{"NOT_STARTED", "IN_PROGRESS", "WAITING", "SUSPENDED", "IN_PROGRESS", "SUCCESSFUL"}
	cases := []struct {
		name       string
		script     []string
		served     string // the bytes' checksum FCO computes (default: sum)
		noSum      bool
		noURL      bool
		finish     func(*fcoServer)
		fail       int
		token      bool
		makeImage  bool
		wait       bool
		vdc        string
		cancelAt   int // cancel the build at this read of the job (0: never)
		wantErr    string
		wantDelete []string
		noFetch    bool
	}{
		{name: "successful", script: ok},
		{name: "token, image, waitForJob, 503 then success", fail: 503, token: true, makeImage: true, wait: true, script: ok},
		// FCO's own checksum check fails the job.
		{name: "checksum mismatch", served: strings.Repeat("cd", 32), script: ok,
			wantErr: "FAILED: checksum of the fetched object", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "no checksum to check", noSum: true, script: ok, wantErr: "no checksum for fetchDisk's checkSum", noFetch: true},
		// A job that says SUCCESSFUL while the result does not match.
		{name: "disk size differs", script: ok, finish: func(s *fcoServer) { s.item["size"] = int64(6) },
			wantErr: "is 6 GB, the fetch asked for 5 GB", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "image size differs", makeImage: true, script: ok, finish: func(s *fcoServer) { s.item["size"] = int64(4) },
			wantErr: "image " + fcoItemID + " is 4 GB", wantDelete: []string{"IMAGE/" + fcoItemID}},
		{name: "successful with an error code", script: ok, finish: func(s *fcoServer) { s.job["errorCode"], s.job["info"] = "STORAGE_ERROR", "partial copy" },
			wantErr: "SUCCESSFUL but holds error code STORAGE_ERROR (partial copy)", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "disk still being created", script: ok, finish: func(s *fcoServer) { s.item["resourceState"] = "CREATING" },
			wantErr: "is CREATING, not ACTIVE", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "disk not attachable", script: ok, finish: func(s *fcoServer) { s.item["status"] = "CANNOT_BE_ATTACHED_TO_SERVER" },
			wantErr: "still being created or deleted", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "disk gone", script: ok, finish: func(s *fcoServer) { s.item = nil },
			wantErr: "no DISK " + fcoItemID},
		{name: "another item", script: ok, finish: func(s *fcoServer) { s.job["itemUUID"] = "9a1b2c3d-disk2" },
			wantErr: "made 9a1b2c3d-disk2, but fetchDisk announced " + fcoItemID, wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "not a fetch job", script: ok, finish: func(s *fcoServer) { s.job["jobType"] = "CREATE_DISK" },
			wantErr: "is a CREATE_DISK job, not a fetch", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "failed job", script: []string{"IN_PROGRESS", "FAILED"}, finish: func(s *fcoServer) { s.job["errorCode"], s.job["info"] = "FETCH_FAILED", "HTTP 404 from the URL" },
			wantErr: "FAILED: HTTP 404 from the URL (error code FETCH_FAILED)", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "cancelled by the cloud", script: []string{"IN_PROGRESS", "CANCELLED"}, wantErr: "CANCELLED", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "build cancelled", script: []string{"IN_PROGRESS", "IN_PROGRESS", "IN_PROGRESS", "SUCCESSFUL"}, cancelAt: 2,
			wantErr: "context canceled", wantDelete: []string{"DISK/" + fcoItemID}},
		{name: "unknown vdc", vdc: "0b8f8d8e-nope", script: ok, wantErr: `vdc_uuid "0b8f8d8e-nope": FCO has no such VDC`, noFetch: true},
		{name: "fetch refused", noURL: true, script: ok, wantErr: "400 Bad Request: fetchParameters.url is required", noFetch: true},
		{name: "fetch unavailable", fail: 503, script: []string{"SUCCESSFUL"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv := &fcoServer{script: c.script, served: sum, finish: c.finish, fail: c.fail, cancel: cancel, at: c.cancelAt}
			if c.served != "" {
				srv.served = c.served
			}
			ts := httptest.NewServer(srv)
			defer ts.Close()
			cl := NewClient(false, 3, nil)
			cl.Backoff = time.Millisecond
			api := &FCO{Endpoint: ts.URL, Username: "packer", CustomerUUID: "cust-1", Password: "s3cret",
				VDCUUID: fcoVDC, ClusterUUID: "cl-1", ProductOfferUUID: fcoOffer, MakeImage: c.makeImage, WaitForJob: c.wait, Client: cl}
			if c.vdc != "" {
				api.VDCUUID = c.vdc
			}
			if c.token {
				api.Password, api.Token = "", "tok-1"
			}
			s := src
			if c.noSum {
				s.Checksum = Checksum{}
			}
			if c.noURL {
				s.URL = ""
			}
			imp, err := Run(ctx, api, spec, s, Options{PollInterval: time.Millisecond})
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("err = %v, want %q (calls %q)", err, c.wantErr, srv.calls)
			}
			if fmt.Sprint(srv.delete) != fmt.Sprint(c.wantDelete) {
				t.Errorf("deleted %v, want %v (calls %q)", srv.delete, c.wantDelete, srv.calls)
			}
			if c.noFetch {
				if srv.job != nil {
					t.Errorf("a fetch was made: %v", srv.job)
				}
				return
			}
			if imp.JobID != fcoJobID || imp.ImageID != fcoItemID {
				t.Errorf("import %+v", imp)
			}
			if c.wantErr == "" && srv.item["resourceState"] != "ACTIVE" {
				t.Errorf("imported item %v", srv.item)
			}
			sk, _ := srv.fetch["skeletonDisk"].(map[string]any)
			fp, _ := srv.fetch["fetchParameters"].(map[string]any)
			if sk["resourceName"] != "factory-image" || sk["size"] != float64(5) || sk["vdcUUID"] != fcoVDC ||
				sk["clusterUUID"] != "cl-1" || sk["productOfferUUID"] != fcoOffer || sk["resourceType"] != "DISK" {
				t.Errorf("skeletonDisk %v", sk)
			}
			if fp["url"] != src.URL || fp["checkSum"] != sum || fp["makeImage"] != c.makeImage || fp["resourceType"] != "FETCH_RESOURCE" {
				t.Errorf("fetchParameters %v", fp)
			}
			if wait := strings.Contains(strings.Join(srv.calls, " "), "/wait"); wait != c.wait {
				t.Errorf("waitForJob used = %v, want %v (calls %q)", wait, c.wait, srv.calls)
			}
		})
	}
}
