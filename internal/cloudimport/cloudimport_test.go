package cloudimport

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// stalled is an API whose import never ends.
type stalled struct{ deleted bool }

func (s *stalled) Name() string { return "fake" }
func (s *stalled) Create(_ context.Context, imp *Import, _ Spec) error {
	imp.ImageID = "img-1"
	return nil
}
func (s *stalled) Start(context.Context, *Import, Spec, Source) error { return nil }
func (s *stalled) Poll(context.Context, *Import) (Status, error) {
	return Status{State: Running, Detail: "importing (os_glance_importing_to_stores=fs)"}, nil
}
func (s *stalled) Verify(context.Context, *Import, Source) error { return nil }
func (s *stalled) Cancel(context.Context, *Import) error         { return nil }
func (s *stalled) Delete(context.Context, *Import) error         { s.deleted = true; return nil }

// TestRunTimeoutNamesTheLastState: a timeout says what the cloud last
// reported, and the half-made image goes.
func TestRunTimeoutNamesTheLastState(t *testing.T) {
	api := &stalled{}
	_, err := Run(context.Background(), api, Spec{Name: "x"}, Source{}, Options{Timeout: 100 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "the last state fake reported: importing (os_glance_importing_to_stores=fs)") {
		t.Errorf("err = %v", err)
	}
	if !api.deleted {
		t.Error("the half-made image was not deleted")
	}
}

// TestSumIn: the checksum in the cloud's algorithm, from Sum or from a
// Checksum already in it; another algorithm cannot be compared.
func TestSumIn(t *testing.T) {
	ctx := context.Background()
	src := Source{Checksum: Checksum{"SHA256", "AB"}}
	if c, err := src.SumIn(ctx, "sha256"); err != nil || c.Value != "ab" {
		t.Errorf("same algorithm: %v %v", c, err)
	}
	if _, err := src.SumIn(ctx, "sha512"); err == nil || !strings.Contains(err.Error(), `cloud hashes with "sha512"`) {
		t.Errorf("other algorithm: %v", err)
	}
	src.Sum = func(_ context.Context, algo string) (Checksum, error) { return Checksum{algo, "cd"}, nil }
	if c, err := src.SumIn(ctx, "sha512"); err != nil || c != (Checksum{"sha512", "cd"}) {
		t.Errorf("Sum: %v %v", c, err)
	}
	for _, a := range []string{"md5", "sha1", "sha256", "SHA512", "sha3_256"} {
		if _, err := NewHash(a); err != nil {
			t.Errorf("NewHash(%s): %v", a, err)
		}
	}
	if _, err := NewHash("blake2b"); err == nil {
		t.Error("NewHash(blake2b) works?")
	}
}
