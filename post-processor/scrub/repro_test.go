package scrub

import (
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// TestSource: the epoch comes from the input artifact first, then
// source_date_epoch, then SOURCE_DATE_EPOCH; none of them, no Source. The
// build name seeds it, as the builder's.
func TestSource(t *testing.T) {
	withEpoch := func(e any) packersdk.Artifact {
		return &packersdk.MockArtifact{StateValues: map[string]any{repro.StateKey: e}}
	}
	for _, c := range []struct {
		name   string
		in     packersdk.Artifact
		option string
		env    string
		want   int64 // -1: no Source
	}{
		{"artifact", withEpoch(int64(100)), "200", "300", 100},
		{"artifact through JSON", withEpoch(float64(100)), "", "", 100},
		{"option", &packersdk.MockArtifact{}, "200", "300", 200},
		{"environment", &packersdk.MockArtifact{}, "", "300", 300},
		{"none", &packersdk.MockArtifact{}, "", "", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(repro.EnvVar, c.env)
			p := &PostProcessor{}
			if err := p.Configure(map[string]any{"source_date_epoch": c.option, "packer_build_name": "web"}); err != nil {
				t.Fatal(err)
			}
			src, err := p.source(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if c.want < 0 {
				if src != nil {
					t.Fatalf("a Source with epoch %d, want none", src.Epoch())
				}
				return
			}
			if src == nil || src.Epoch() != c.want || src.UUID("x") != repro.New(c.want, "web").UUID("x") {
				t.Fatalf("got %v, want epoch %d and build name web", src, c.want)
			}
		})
	}
	if err := (&PostProcessor{}).Configure(map[string]any{"source_date_epoch": "yesterday"}); err == nil {
		t.Error("source_date_epoch = yesterday was accepted")
	}
}

// The artifact answers the epoch itself: the input's connection is closed
// once PostProcess returns, so the post-processors after the scrub could
// not ask the input.
func TestArtifactKeepsEpoch(t *testing.T) {
	a := &Artifact{Input: &packersdk.MockArtifact{}, Repro: repro.New(1767225600, "web")}
	if got := a.State(repro.StateKey); got != int64(1767225600) {
		t.Errorf("State(%q) = %v, want 1767225600", repro.StateKey, got)
	}
	if got := (&Artifact{Input: &packersdk.MockArtifact{}}).State(repro.StateKey); got != nil {
		t.Errorf("not reproducible: State(%q) = %v", repro.StateKey, got)
	}
}
