package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	getter "github.com/hashicorp/go-getter/v2"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// stepBaseImage puts the path of the base image in the state. A local file
// is used where it is, its checksum verified when one is given: it needs no
// entry in Packer's download cache (the SDK's download step leaves a
// 0-byte copy and lock file there for every local path). A URL goes through
// the SDK's download step with go-getter's decompression off
// (`archive=false`): go-getter decompresses by file name into a dense file
// in the cache, which no build removes; stepWorkingDisk decompresses into
// the output directory instead, leaving holes.
type stepBaseImage struct{}

func (s *stepBaseImage) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	if path, ok := localBaseImage(cfg.BaseImage); ok {
		if err := verifyLocalChecksum(ctx, path, cfg.BaseImageChecksum); err != nil {
			return halt(state, err)
		}
		uiOf(state).Say(fmt.Sprintf("Base image %s (a local file, used in place)", path))
		state.Put(stateBaseImagePath, path)
		return multistep.ActionContinue
	}

	// The SDK's step reports its own errors as a Go slice and prints
	// "Trying URL" twice: its ui is wrapped to keep the first and the
	// failure's cause, and the error is said again in one sentence.
	ui := &downloadUI{Ui: uiOf(state), base: cfg.BaseImage}
	state.Put("ui", packersdk.Ui(ui))
	start := time.Now()
	action := (&commonsteps.StepDownload{
		Checksum:    cfg.BaseImageChecksum,
		Description: "base image",
		ResultKey:   stateBaseImagePath,
		Url:         []string{noArchive(cfg.BaseImage)},
		Extension:   "img",
	}).Run(ctx, state)
	state.Put("ui", ui.Ui)
	if action == multistep.ActionContinue {
		if p, ok := state.Get(stateBaseImagePath).(string); ok {
			ui.Ui.Say(doneLine("Downloaded base_image "+cfg.BaseImage, time.Since(start), fileSize(p)))
		}
		return action
	}
	if ctx.Err() != nil {
		return action
	}
	stepErr, _ := state.Get("error").(error)
	return halt(state, downloadError(cfg.BaseImage, ui.cause, ui.checksumMismatch, stepErr))
}

// checksumLines finds go-getter's ChecksumError lines ("Expected: HEX",
// "Got: HEX") in the download step's error, which holds it as text only.
var checksumLines = regexp.MustCompile(`Expected: ([0-9a-f]+)\s+Got: ([0-9a-f]+)`)

func (s *stepBaseImage) Cleanup(multistep.StateBag) {}

// localBaseImage tells whether base_image names a local file (a path or a
// file:// URL) and returns its path.
func localBaseImage(base string) (string, bool) {
	if strings.HasPrefix(strings.ToLower(base), "file://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", false
		}
		return u.Path, true
	}
	if strings.Contains(base, "://") || strings.Contains(base, "::") {
		return "", false
	}
	return base, true
}

// verifyLocalChecksum checks path against a checksum in Packer's forms
// (`sha256:HEX`, `file:URL-or-path` of a checksum file, a bare hex value,
// `none` or empty for no check), through go-getter as the download step
// does.
func verifyLocalChecksum(ctx context.Context, path, checksum string) error {
	if checksum == "" || strings.EqualFold(checksum, "none") {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("base_image %s: %w", path, err)
	}
	wd, _ := os.Getwd()
	u := url.URL{Path: abs, RawQuery: url.Values{"checksum": {checksum}}.Encode()}
	fc, err := (&getter.Client{}).GetChecksum(ctx, &getter.Request{Src: u.String(), Pwd: wd})
	if err != nil {
		return fmt.Errorf("base_image_checksum %q cannot be used: %v; give it as TYPE:HEX (sha256:...), file:PATH-or-URL of a checksum file, or none", checksum, err)
	}
	var cerr *getter.ChecksumError
	switch err := fc.Checksum(path); {
	case errors.As(err, &cerr):
		return fmt.Errorf("base_image %s has %s %x, not the %x of base_image_checksum: check that the checksum is the one published for this file", path, fc.Type, cerr.Actual, cerr.Expected)
	case err != nil:
		return fmt.Errorf("base_image %s: checksum: %v", path, err)
	}
	return nil
}

// noArchive turns go-getter's decompression by file name off for a URL.
func noArchive(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw // the download step reports it
	}
	q := u.Query()
	if q.Get("archive") == "" {
		q.Set("archive", "false")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// downloadError is the one-sentence error of a failed download: what was
// asked, what failed, what to check.
func downloadError(base, cause string, checksumMismatch bool, stepErr error) error {
	if checksumMismatch {
		if m := checksumLines.FindStringSubmatch(fmt.Sprint(stepErr)); m != nil {
			return fmt.Errorf("base_image %s was downloaded, but its checksum is %s, not the %s of base_image_checksum (the download was removed): check that the checksum is the one published for this file", base, m[2], m[1])
		}
		return fmt.Errorf("base_image %s was downloaded, but its checksum is not base_image_checksum (the download was removed): check that the checksum is the one published for this file", base)
	}
	if cause == "" {
		return fmt.Errorf("base_image %s could not be downloaded: check the URL and that its server is reachable from this host", base)
	}
	return fmt.Errorf("base_image %s could not be downloaded (%s): check the URL and that its server is reachable from this host", base, cause)
}

// downloadUI wraps the download step's ui: it keeps one "Trying" line,
// records the cause of a failure instead of printing it, and drops the
// step's own error (downloadError says it in one sentence).
type downloadUI struct {
	packersdk.Ui
	base             string // base_image as given
	tried            bool
	cause            string
	checksumMismatch bool
}

func (u *downloadUI) Say(msg string) {
	switch {
	case strings.HasPrefix(msg, "Trying "):
		// The URL as the user wrote it, not with archive=false and the
		// checksum in its query, and once.
		if u.tried {
			return
		}
		u.tried = true
		msg = "Trying " + u.base
	case strings.Contains(msg, " => "):
		msg = u.base + " =>" + msg[strings.LastIndex(msg, " => ")+3:]
	case strings.HasPrefix(msg, "Download failed "):
		u.cause = oneLine(strings.TrimPrefix(msg, "Download failed "))
		return
	case strings.HasPrefix(msg, "Checksum did not match"):
		u.checksumMismatch = true
		return
	}
	u.Ui.Say(msg)
}

func (u *downloadUI) Error(string) {}

// oneLine joins a multi-line error into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
