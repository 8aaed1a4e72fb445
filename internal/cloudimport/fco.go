package cloudimport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// FCO is the Flexiant Cloud Orchestrator REST API (user endpoint). The
// calls it makes, relative to Endpoint:
//
//	POST   /rest/user/current/resources/disk/fetch        {skeletonDisk, fetchParameters} -> Job
//	GET    /rest/user/current/resources/job/{uuid}        -> Job
//	GET    /rest/user/current/resources/job/{uuid}/wait?timeout=S -> Job (WaitForJob)
//	PUT    /rest/user/current/resources/job/{uuid}/cancel -> Job
//	DELETE /rest/user/current/resources/disk/{uuid}  (or image/{uuid} with MakeImage)
//
// Authentication is HTTP basic with "user/customerUUID" and the password,
// or a token in X-Auth-Token. A Job's status goes NOT_STARTED, IN_PROGRESS,
// WAITING, SUSPENDED to SUCCESSFUL, FAILED or CANCELLED; its itemUUID is
// the disk (or image) being made. FCO checks the checksum itself while
// fetching; a mismatch fails the job.
type FCO struct {
	Endpoint               string
	Username, CustomerUUID string
	Password               string
	Token                  string
	VDCUUID, ClusterUUID   string
	ProductOfferUUID       string
	MakeImage              bool
	WaitForJob             bool // long-poll waitForJob instead of reading the job
	WaitSeconds            int  // waitForJob's timeout; 0: 30
	Client                 *Client
}

// fcoJob is the part of FCO's Job we read.
type fcoJob struct {
	ResourceUUID string `json:"resourceUUID"`
	Status       string `json:"status"`
	ItemUUID     string `json:"itemUUID"`
	ErrorCode    int    `json:"errorCode"`
	Info         string `json:"info"`
}

// Name is "fco".
func (f *FCO) Name() string { return "fco" }

func (f *FCO) do(ctx context.Context, method, path string, in, out any) error {
	hdr := http.Header{}
	if f.Token != "" {
		hdr.Set("X-Auth-Token", f.Token)
	} else {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(f.Username+"/"+f.CustomerUUID, f.Password)
		hdr.Set("Authorization", req.Header.Get("Authorization"))
	}
	_, err := f.Client.Do(ctx, method, strings.TrimRight(f.Endpoint, "/")+"/rest/user/current"+path, hdr, in, out)
	return err
}

// Create does nothing: fetchDisk makes the disk and starts the job at once.
func (f *FCO) Create(context.Context, *Import, Spec) error { return nil }

// Start calls fetchDisk with a skeleton disk and the fetch parameters.
func (f *FCO) Start(ctx context.Context, imp *Import, spec Spec, src Source) error {
	gib := (spec.Size + 1<<30 - 1) >> 30
	body := map[string]any{
		"skeletonDisk": map[string]any{
			"resourceName":     spec.Name,
			"resourceType":     "DISK",
			"size":             gib,
			"vdcUUID":          f.VDCUUID,
			"clusterUUID":      f.ClusterUUID,
			"productOfferUUID": f.ProductOfferUUID,
		},
		"fetchParameters": map[string]any{
			"url":       src.URL,
			"checkSum":  src.Checksum.Value,
			"makeImage": f.MakeImage,
		},
	}
	var job fcoJob
	if err := f.do(ctx, "POST", "/resources/disk/fetch", body, &job); err != nil {
		return err
	}
	if job.ResourceUUID == "" {
		return errors.New("fetchDisk answered no job")
	}
	imp.JobID, imp.ImageID = job.ResourceUUID, job.ItemUUID
	return nil
}

// Poll reads (or waits for) the job.
func (f *FCO) Poll(ctx context.Context, imp *Import) (Status, error) {
	var job fcoJob
	path := "/resources/job/" + url.PathEscape(imp.JobID)
	if f.WaitForJob {
		secs := f.WaitSeconds
		if secs <= 0 {
			secs = 30
		}
		path += fmt.Sprintf("/wait?timeout=%d", secs)
	}
	if err := f.do(ctx, "GET", path, nil, &job); err != nil {
		return Status{}, err
	}
	if job.ItemUUID != "" {
		imp.ImageID = job.ItemUUID
	}
	st := Status{State: Running, Detail: job.Status}
	switch job.Status {
	case "SUCCESSFUL":
		st.State = Done
	case "FAILED", "CANCELLED":
		st.State = Failed
		st.Message = job.Status
		if job.Info != "" {
			st.Message += ": " + job.Info
		}
		if job.ErrorCode != 0 {
			st.Message += fmt.Sprintf(" (error code %d)", job.ErrorCode)
		}
	case "NOT_STARTED", "IN_PROGRESS", "WAITING", "SUSPENDED":
	default:
		return st, fmt.Errorf("job %s in an unknown state %q", imp.JobID, job.Status)
	}
	return st, nil
}

// Verify: FCO verified the checksum while fetching (a mismatch fails the job).
func (f *FCO) Verify(context.Context, *Import, Source) error { return nil }

// Cancel cancels the job (a job already ended cannot be, and is not an error).
func (f *FCO) Cancel(ctx context.Context, imp *Import) error {
	err := f.do(ctx, "PUT", "/resources/job/"+url.PathEscape(imp.JobID)+"/cancel", nil, nil)
	var he *HTTPError
	if errors.As(err, &he) && he.Status == http.StatusConflict {
		return nil
	}
	return err
}

// Delete removes the disk (or image) the fetch made.
func (f *FCO) Delete(ctx context.Context, imp *Import) error {
	kind := "disk"
	if f.MakeImage {
		kind = "image"
	}
	err := f.do(ctx, "DELETE", "/resources/"+kind+"/"+url.PathEscape(imp.ImageID), nil, nil)
	if IsNotFound(err) {
		return nil
	}
	return err
}
