package packerglue

import (
	"fmt"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// ReproSource is a post-processor's repro.Source: the epoch in the input
// artifact's State under repro.StateKey (an int64 from the imagefactory
// builder, or the number types Packer's RPC or a JSON boundary turn it
// into), else option (the post-processor's source_date_epoch, digits),
// else the environment's SOURCE_DATE_EPOCH; seeded with buildName, Packer's
// build name, as the builder's is. Nil when none is set; an error names
// the bad option or environment value.
func ReproSource(in packersdk.Artifact, option, buildName string) (*repro.Source, error) {
	if in != nil {
		switch e := in.State(repro.StateKey).(type) {
		case int64:
			return repro.New(e, buildName), nil
		case int:
			return repro.New(int64(e), buildName), nil
		case uint64:
			return repro.New(int64(e), buildName), nil
		case float64:
			return repro.New(int64(e), buildName), nil
		case string:
			if n, err := repro.Parse(e); err == nil {
				return repro.New(n, buildName), nil
			}
		}
	}
	if option != "" {
		e, err := repro.Parse(option)
		if err != nil {
			return nil, fmt.Errorf("source_date_epoch: %w", err)
		}
		return repro.New(e, buildName), nil
	}
	e, ok, err := repro.FromEnv()
	if err != nil {
		return nil, fmt.Errorf("%w (unset it, or set source_date_epoch)", err)
	}
	if !ok {
		return nil, nil
	}
	return repro.New(e, buildName), nil
}
