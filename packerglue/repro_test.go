package packerglue

import (
	"errors"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// The epoch's sources in order: the input artifact's State, the option,
// the environment.
func TestReproSource(t *testing.T) {
	art := func(v interface{}) packersdk.Artifact {
		return &packersdk.MockArtifact{StateValues: map[string]interface{}{repro.StateKey: v}}
	}
	t.Setenv(repro.EnvVar, "1700000000")
	for _, c := range []struct {
		name   string
		in     packersdk.Artifact
		option string
		want   int64
	}{
		{"environment", art(nil), "", 1700000000},
		{"option before environment", art(nil), "42", 42},
		{"artifact first", art(int64(7)), "42", 7},
		{"artifact through RPC as int", art(9), "", 9},
		{"artifact through JSON", art(float64(11)), "", 11},
	} {
		got, err := ReproSource(c.in, c.option, "web")
		if err != nil || got.Epoch() != c.want || got.UUID("x") != repro.New(c.want, "web").UUID("x") {
			t.Errorf("%s: epoch %d (%v), want %d seeded with build web", c.name, got.Epoch(), err, c.want)
		}
	}
	if _, err := ReproSource(art(nil), "1.5", "web"); !errors.Is(err, repro.ErrBadEpoch) {
		t.Errorf("a bad option: %v", err)
	}
	t.Setenv(repro.EnvVar, "")
	if s, err := ReproSource(art(nil), "", "web"); s.Enabled() || err != nil {
		t.Errorf("no epoch anywhere: %v, %v", s, err)
	}
	t.Setenv(repro.EnvVar, "tomorrow")
	if _, err := ReproSource(art(nil), "", "web"); !errors.Is(err, repro.ErrBadEpoch) {
		t.Errorf("a bad SOURCE_DATE_EPOCH: %v", err)
	}
}
