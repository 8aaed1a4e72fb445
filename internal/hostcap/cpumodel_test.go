package hostcap

import (
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/isalevel"
)

func TestCPUModel(t *testing.T) {
	for _, tc := range []struct {
		accel string
		level isalevel.Level
		want  string
		err   string
	}{
		{AccelKVM, isalevel.V3, "host", ""},
		{AccelKVM, isalevel.Unknown, "host", ""},
		{AccelTCG, isalevel.Baseline, "qemu64", ""},
		{AccelTCG, isalevel.V2, "Nehalem", ""},
		{AccelTCG, isalevel.V3, "max", ""},
		{AccelTCG, isalevel.Unknown, "max", ""},
		{AccelTCG, isalevel.V4, "", "AVX-512"},
	} {
		t.Run(tc.accel+"/"+tc.level.String(), func(t *testing.T) {
			got, why, err := CPUModel(tc.accel, tc.level)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "cpu_model") {
					t.Errorf("CPUModel = %q, %v; want an error naming %q and cpu_model", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || why == "" {
				t.Errorf("CPUModel = %q (%q), %v; want %q", got, why, err, tc.want)
			}
		})
	}
}
