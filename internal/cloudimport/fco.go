package cloudimport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// FCO is the Flexiant Cloud Orchestrator REST user API (version "current").
// The calls it makes, relative to Endpoint + /rest/user/current/, as FCO's
// REST reference defines them (the sources are named in fco_test.go):
//
//	GET    resources/VDC/{uuid}, resources/PRODUCTOFFER/{uuid}  getResource (Create: do they exist?)
//	GET    resources/fetch/disk {skeletonDisk, fetchParameters} fetchDisk -> Job
//	GET    resources/JOB/{uuid}                                 getResource -> Job
//	GET    resources/job/{uuid}/wait?noWaitForChildren=false    waitForJob -> Job (WaitForJob)
//	PUT    resources/job/{uuid}/cancel                          cancelJob -> Job
//	GET    resources/DISK/{uuid} (IMAGE/{uuid} with MakeImage)  getResource (Verify)
//	DELETE resources/DISK/{uuid} (IMAGE/{uuid})                 deleteResource -> Job
//
// Authentication is HTTP basic with "user/customerUUID" and the password,
// or with the API token as user name and an empty password. A Job's status
// goes NOT_STARTED, IN_PROGRESS, WAITING, SUSPENDED to SUCCESSFUL, FAILED
// or CANCELLED; its itemUUID is the disk (or image) being made, its
// errorCode (a string) the error's code or null. An error answer's body is
// an ExtilityExceptionInfo: {message, errorCode, errorType}.
type FCO struct {
	Endpoint               string
	Username, CustomerUUID string
	Password               string
	Token                  string
	VDCUUID, ClusterUUID   string
	ProductOfferUUID       string
	MakeImage              bool
	WaitForJob             bool // long-poll waitForJob instead of reading the job
	Client                 *Client

	sizeGB int64 // the skeleton disk's size Start asked for, in GB
}

// fcoString is an FCO string field that some servers send as a number
// (Job.errorCode is xs:string in FCO's schema).
type fcoString string

func (s *fcoString) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		*s = fcoString(str)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("FCO string field: %s", b)
	}
	*s = fcoString(n.String())
	return nil
}

// fcoJob is the part of FCO's Job we read.
type fcoJob struct {
	ResourceUUID string    `json:"resourceUUID"`
	Status       string    `json:"status"`
	JobType      string    `json:"jobType"`
	ItemUUID     string    `json:"itemUUID"`
	ItemType     string    `json:"itemType"`
	ErrorCode    fcoString `json:"errorCode"`
	Info         string    `json:"info"`
}

// fcoDisk is the part of FCO's Disk (or Image) we read; size is in GB.
type fcoDisk struct {
	ResourceUUID  string `json:"resourceUUID"`
	ResourceState string `json:"resourceState"`
	Size          int64  `json:"size"`
	Status        string `json:"status"` // a Disk's DiskStatus
}

// Name is "fco".
func (f *FCO) Name() string { return "fco" }

func (f *FCO) do(ctx context.Context, method, path string, in, out any) error {
	req, _ := http.NewRequest("GET", "/", nil)
	if f.Token != "" {
		req.SetBasicAuth(f.Token, "")
	} else {
		req.SetBasicAuth(f.Username+"/"+f.CustomerUUID, f.Password)
	}
	hdr := http.Header{"Authorization": req.Header["Authorization"]}
	_, err := f.Client.Do(ctx, method, strings.TrimRight(f.Endpoint, "/")+"/rest/user/current/"+path, hdr, in, out)
	return err
}

// itemType is the ResourceType of what the fetch makes.
func (f *FCO) itemType() string {
	if f.MakeImage {
		return "IMAGE"
	}
	return "DISK"
}

// Create makes nothing (fetchDisk makes the disk and starts the job at
// once); it checks that the VDC and the product offer exist for this
// account, so a wrong UUID fails before a fetch is paid for.
func (f *FCO) Create(ctx context.Context, _ *Import, _ Spec) error {
	for _, r := range []struct{ option, typ, uuid string }{
		{"vdc_uuid", "VDC", f.VDCUUID}, {"product_offer_uuid", "PRODUCTOFFER", f.ProductOfferUUID},
	} {
		if r.uuid == "" {
			continue
		}
		var got struct {
			ResourceUUID string `json:"resourceUUID"`
		}
		err := f.do(ctx, "GET", "resources/"+r.typ+"/"+url.PathEscape(r.uuid), nil, &got)
		if IsNotFound(err) || err == nil && got.ResourceUUID != r.uuid {
			return fmt.Errorf("%s %q: FCO has no such %s for this account; check the UUID in FCO's control panel", r.option, r.uuid, r.typ)
		}
		if err != nil {
			return fmt.Errorf("checking %s %q: %w", r.option, r.uuid, err)
		}
	}
	return nil
}

// Start calls fetchDisk with a skeleton disk and the fetch parameters. It
// refuses to fetch without a checksum: checkSum is what makes FCO check
// the bytes it fetched.
func (f *FCO) Start(ctx context.Context, imp *Import, spec Spec, src Source) error {
	if src.Checksum.Value == "" {
		return errors.New("no checksum for fetchDisk's checkSum: FCO would not verify the bytes it fetches; set image_checksum")
	}
	f.sizeGB = (spec.Size + 1<<30 - 1) >> 30
	body := map[string]any{
		"skeletonDisk": map[string]any{
			"resourceName":     spec.Name,
			"resourceType":     "DISK",
			"size":             f.sizeGB,
			"vdcUUID":          f.VDCUUID,
			"clusterUUID":      f.ClusterUUID,
			"productOfferUUID": f.ProductOfferUUID,
		},
		"fetchParameters": map[string]any{
			"resourceType": "FETCH_RESOURCE",
			"url":          src.URL,
			"checkSum":     src.Checksum.Value,
			"makeImage":    f.MakeImage,
			"vmSupport":    true,
			"ctSupport":    false,
		},
	}
	var job fcoJob
	if err := f.do(ctx, "GET", "resources/fetch/disk", body, &job); err != nil {
		return err
	}
	if job.ResourceUUID == "" {
		return errors.New("fetchDisk answered no job")
	}
	imp.JobID, imp.ImageID = job.ResourceUUID, job.ItemUUID
	return nil
}

// job reads the import's job, waiting for it to end when wait is set.
func (f *FCO) job(ctx context.Context, imp *Import, wait bool) (fcoJob, error) {
	var job fcoJob
	path := "resources/JOB/" + url.PathEscape(imp.JobID)
	if wait {
		path = "resources/job/" + url.PathEscape(imp.JobID) + "/wait?noWaitForChildren=false"
	}
	err := f.do(ctx, "GET", path, nil, &job)
	return job, err
}

// Poll reads (or waits for) the job.
func (f *FCO) Poll(ctx context.Context, imp *Import) (Status, error) {
	job, err := f.job(ctx, imp, f.WaitForJob)
	if err != nil {
		return Status{}, err
	}
	if job.ItemUUID != "" && imp.ImageID == "" {
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
		if job.ErrorCode != "" {
			st.Message += fmt.Sprintf(" (error code %s)", job.ErrorCode)
		}
	case "NOT_STARTED", "IN_PROGRESS", "WAITING", "SUSPENDED":
	default:
		return st, fmt.Errorf("job %s in an unknown state %q", imp.JobID, job.Status)
	}
	return st, nil
}

// Verify checks what FCO reports of the finished fetch. The job, read
// again: it is the job Start got, it ended SUCCESSFUL with no errorCode, it
// is a fetch job (FETCH_DISK, FETCH_IMAGE or FETCH_RESOURCE, when named),
// and its item is the disk (or image) the fetch made, of that type. The
// item: it exists, is ACTIVE (when its state is reported), a disk is not
// CANNOT_BE_ATTACHED_TO_SERVER (being created or deleted), and its size in
// GB is the size Start asked for (an image's only when it reports one).
// FCO reports no checksum of what it fetched, nor that it compared one:
// the checksum given to fetchDisk is checked by FCO alone, and a job that
// ended SUCCESSFUL without errorCode is FCO's word that it matched.
func (f *FCO) Verify(ctx context.Context, imp *Import, src Source) error {
	job, err := f.job(ctx, imp, false)
	if err != nil {
		return fmt.Errorf("verifying: reading job %s: %w", imp.JobID, err)
	}
	switch {
	case job.ResourceUUID != imp.JobID:
		return fmt.Errorf("verifying: asked for job %s, FCO answered job %q", imp.JobID, job.ResourceUUID)
	case job.Status != "SUCCESSFUL":
		return fmt.Errorf("verifying: job %s is %s, not SUCCESSFUL", imp.JobID, job.Status)
	case job.ErrorCode != "":
		return fmt.Errorf("verifying: job %s is SUCCESSFUL but holds error code %s (%s)", imp.JobID, job.ErrorCode, job.Info)
	case job.JobType != "" && job.JobType != "FETCH_DISK" && job.JobType != "FETCH_IMAGE" && job.JobType != "FETCH_RESOURCE":
		return fmt.Errorf("verifying: job %s is a %s job, not a fetch", imp.JobID, job.JobType)
	case job.ItemUUID == "":
		return fmt.Errorf("verifying: job %s names no %s it made", imp.JobID, strings.ToLower(f.itemType()))
	case imp.ImageID != "" && job.ItemUUID != imp.ImageID:
		return fmt.Errorf("verifying: job %s made %s, but fetchDisk announced %s", imp.JobID, job.ItemUUID, imp.ImageID)
	case job.ItemType != "" && job.ItemType != f.itemType():
		return fmt.Errorf("verifying: job %s made a %s, not a %s", imp.JobID, job.ItemType, f.itemType())
	}
	imp.ImageID = job.ItemUUID
	var item fcoDisk
	if err := f.do(ctx, "GET", "resources/"+f.itemType()+"/"+url.PathEscape(imp.ImageID), nil, &item); err != nil {
		return fmt.Errorf("verifying: reading %s %s: %w", strings.ToLower(f.itemType()), imp.ImageID, err)
	}
	what := strings.ToLower(f.itemType()) + " " + imp.ImageID
	switch {
	case item.ResourceUUID != imp.ImageID:
		return fmt.Errorf("verifying: asked for %s, FCO answered %q", what, item.ResourceUUID)
	case item.ResourceState != "" && item.ResourceState != "ACTIVE":
		return fmt.Errorf("verifying: %s is %s, not ACTIVE", what, item.ResourceState)
	case item.Status == "CANNOT_BE_ATTACHED_TO_SERVER":
		return fmt.Errorf("verifying: %s is still being created or deleted (%s)", what, item.Status)
	case item.Size == 0 && !f.MakeImage:
		return fmt.Errorf("verifying: %s reports no size", what)
	case item.Size != 0 && item.Size != f.sizeGB:
		return fmt.Errorf("verifying: %s is %d GB, the fetch asked for %d GB (disk_size, or the image's virtual size rounded up)", what, item.Size, f.sizeGB)
	}
	return nil
}

// Cancel cancels the job (a job already ended cannot be, and is not an error).
func (f *FCO) Cancel(ctx context.Context, imp *Import) error {
	err := f.do(ctx, "PUT", "resources/job/"+url.PathEscape(imp.JobID)+"/cancel", nil, nil)
	var he *HTTPError
	if errors.As(err, &he) && he.Status == http.StatusConflict {
		return nil
	}
	return err
}

// Delete removes the disk (or image) the fetch made.
func (f *FCO) Delete(ctx context.Context, imp *Import) error {
	err := f.do(ctx, "DELETE", "resources/"+f.itemType()+"/"+url.PathEscape(imp.ImageID), nil, nil)
	if IsNotFound(err) {
		return nil
	}
	return err
}
