// Package cloudimport drives a cloud's pull-by-URL image import: create the
// image record, tell the cloud where to fetch the disk from, wait for it,
// verify what it got, and remove what a failed or cancelled import left.
// Each cloud API is one implementation of API (glance.go, fco.go); a new
// one is a file, not a rewrite.
package cloudimport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Spec describes the image to make.
type Spec struct {
	Name            string
	DiskFormat      string // raw, qcow2...
	ContainerFormat string // Glance: bare
	Visibility      string // Glance: private, shared, community, public
	Properties      map[string]string
	Tags            []string
	Size            int64 // the disk's virtual size in bytes
}

// Source is where the cloud fetches the disk, and its checksum.
type Source struct {
	URL      string
	Checksum Checksum
	// Sum, when set, returns the checksum in algorithm algo (a hashlib
	// name, as Glance's os_hash_algo) of the bytes the cloud fetched;
	// Verify asks it in the cloud's own algorithm. Unset: only Checksum
	// is known.
	Sum func(ctx context.Context, algo string) (Checksum, error)
}

// SumIn is src's checksum in algorithm algo: Sum's answer, or Checksum
// when it is in algo.
func (src Source) SumIn(ctx context.Context, algo string) (Checksum, error) {
	switch {
	case src.Sum != nil:
		return src.Sum(ctx, algo)
	case strings.EqualFold(src.Checksum.Type, algo):
		return Checksum{Type: algo, Value: strings.ToLower(src.Checksum.Value)}, nil
	}
	return Checksum{}, fmt.Errorf("cannot compare: the cloud hashes with %q, the source checksum is %q", algo, src.Checksum.Type)
}

// Checksum is a hash of the served file: Type is md5, sha1, sha256, sha384
// or sha512, Value lower-case hex.
type Checksum struct {
	Type, Value string
}

func (c Checksum) String() string { return c.Type + ":" + c.Value }

// Import is one import in progress: what the cloud has made so far.
type Import struct {
	ImageID string // the cloud's image (or disk) ID, once it exists
	JobID   string // the cloud's job, for APIs that run one
}

// State is an import's state as polled.
type State int

// States of an import.
const (
	Running State = iota
	Done
	Failed
)

// Status is one poll's answer.
type Status struct {
	State   State
	Detail  string // the cloud's own word for it (importing, IN_PROGRESS...)
	Message string // why it failed
}

// API is one cloud's image import API.
type API interface {
	// Name is the API's name for messages ("glance", "fco").
	Name() string
	// Create makes the image record, when the API has one before the fetch.
	Create(ctx context.Context, imp *Import, spec Spec) error
	// Start asks the cloud to fetch the disk from src.
	Start(ctx context.Context, imp *Import, spec Spec, src Source) error
	// Poll reports the import's state.
	Poll(ctx context.Context, imp *Import) (Status, error)
	// Verify checks that what the cloud holds has src's checksum.
	Verify(ctx context.Context, imp *Import, src Source) error
	// Cancel stops the cloud's job, where the API allows.
	Cancel(ctx context.Context, imp *Import) error
	// Delete removes the image (or disk) the import made.
	Delete(ctx context.Context, imp *Import) error
}

// Options control Run.
type Options struct {
	Timeout      time.Duration // the whole import; 0: no limit but ctx
	PollInterval time.Duration // between polls; 0: 5 s
	Say          func(string)  // progress messages (may be nil)
}

// ErrTimeout is returned when the import does not end within Options.Timeout.
var ErrTimeout = errors.New("import timed out")

// cleanupTimeout bounds the cancel and delete after a failure, which run on
// a fresh context: the build's may be the one that was cancelled.
const cleanupTimeout = 2 * time.Minute

// Run imports spec from src through api and returns the finished import.
// On failure, timeout or cancellation it cancels the cloud's job and
// deletes the half-made image before returning the error.
func Run(ctx context.Context, api API, spec Spec, src Source, opts Options) (imp *Import, err error) {
	say := opts.Say
	if say == nil {
		say = func(string) {}
	}
	interval := opts.PollInterval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	runCtx := ctx
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, opts.Timeout, ErrTimeout)
		defer cancel()
	}
	imp = &Import{}
	jobEnded := false // a job that ended needs no cancel
	last := ""        // the cloud's last word on the import
	defer func() {
		if err == nil {
			return
		}
		if cause := context.Cause(runCtx); cause != nil && errors.Is(cause, ErrTimeout) {
			state := "nothing yet"
			if last != "" {
				state = last
			}
			why := "" // a call the deadline cut says how
			if !errors.Is(err, ErrTimeout) {
				why = fmt.Sprintf(" (%v)", err)
			}
			err = fmt.Errorf("%s: %w after %s; the last state %s reported: %s%s", api.Name(), ErrTimeout, opts.Timeout, api.Name(), state, why)
		}
		if imp.ImageID == "" && imp.JobID == "" {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if imp.JobID != "" && !jobEnded {
			if cerr := api.Cancel(cctx, imp); cerr != nil {
				say(fmt.Sprintf("cancelling %s job %s: %v", api.Name(), imp.JobID, cerr))
			} else {
				say(fmt.Sprintf("Cancelled %s job %s", api.Name(), imp.JobID))
			}
		}
		if imp.ImageID != "" {
			if derr := api.Delete(cctx, imp); derr != nil {
				err = fmt.Errorf("%w; and deleting the half-made image %s failed: %v", err, imp.ImageID, derr)
			} else {
				say(fmt.Sprintf("Deleted the half-made image %s", imp.ImageID))
			}
		}
	}()

	if err := api.Create(runCtx, imp, spec); err != nil {
		return imp, fmt.Errorf("%s: creating image %q: %w", api.Name(), spec.Name, err)
	}
	if imp.ImageID != "" {
		say(fmt.Sprintf("Created image %s (%s)", imp.ImageID, spec.Name))
	}
	if err := api.Start(runCtx, imp, spec, src); err != nil {
		return imp, fmt.Errorf("%s: starting the import: %w", api.Name(), err)
	}
	say(fmt.Sprintf("Import started; waiting for %s to fetch the disk", api.Name()))
	for {
		st, err := api.Poll(runCtx, imp)
		if err != nil {
			return imp, fmt.Errorf("%s: polling the import: %w", api.Name(), err)
		}
		if st.Detail != last {
			say(fmt.Sprintf("  %s: %s", api.Name(), st.Detail))
			last = st.Detail
		}
		jobEnded = st.State != Running
		switch st.State {
		case Done:
			if err := api.Verify(runCtx, imp, src); err != nil {
				return imp, fmt.Errorf("%s: %w", api.Name(), err)
			}
			return imp, nil
		case Failed:
			msg := st.Message
			if msg == "" {
				msg = st.Detail
			}
			return imp, fmt.Errorf("%s: the import failed: %s", api.Name(), msg)
		}
		select {
		case <-runCtx.Done():
			return imp, fmt.Errorf("%s: waiting for the import: %w", api.Name(), context.Cause(runCtx))
		case <-time.After(interval):
		}
	}
}
