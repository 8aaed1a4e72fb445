package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
)

// What scripts see: the accelerator alone on stdout, the reason on
// stderr, and exit codes for a refusal and for bad usage; with the probe
// faked as on a host whose KVM hangs.
func TestRun(t *testing.T) {
	defer hostcap.SetProber(func(time.Duration) hostcap.Verdict {
		return hostcap.Verdict{Reason: "/dev/kvm opens but a test guest did not reach long mode in 5s", Took: 5 * time.Second}
	})()
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string // stdout exactly; stderr a substring
	}{
		{[]string{"accelerator"}, 0, "tcg\n", "accelerator tcg: /dev/kvm opens but a test guest did not reach long mode in 5s\n"},
		{[]string{"accelerator", "auto"}, 0, "tcg\n", "accelerator tcg: /dev/kvm opens"},
		{[]string{"accelerator", "tcg"}, 0, "tcg\n", `accelerator tcg: asked for: accelerator = "tcg"`},
		{[]string{"accelerator", "kvm"}, 1, "", `hostcap: accelerator = "kvm": KVM cannot run a guest on this host`},
		{[]string{"accelerator", "hvf"}, 1, "", `accelerator "hvf" is not supported`},
		{[]string{"kvm"}, 0, "kvm unusable (probed in 5s): /dev/kvm opens but a test guest did not reach long mode in 5s\n", ""},
		{nil, 2, "", "usage: hostcap"},
		{[]string{"accelerator", "kvm", "x"}, 2, "", "usage: hostcap"},
		{[]string{"binfmt"}, 2, "", "usage: hostcap"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code || stdout.String() != tc.stdout || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("hostcap %q: exit %d, stdout %q, stderr %q; want %d, %q, stderr containing %q",
					tc.args, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}
