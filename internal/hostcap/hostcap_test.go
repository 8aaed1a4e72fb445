package hostcap

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Accelerator's choice for each request, with the probe faked: the
// verdict's reason reaches the user, an explicit kvm on a host where the
// probe failed is refused with the way out, and the probe runs once.
func TestAccelerator(t *testing.T) {
	works := Verdict{Usable: true, Reason: "a test guest reached long mode under /dev/kvm and ran 256Mi loop iterations in 90ms"}
	hangs := Verdict{Reason: "/dev/kvm opens but a test guest did not reach long mode in 5s (it ran in real mode and protected mode, not in long mode)"}
	noDevice := openFailed(errENOENT)
	denied := openFailed(errEACCES)
	unproven := Verdict{Unproven: true, Reason: "KVM is unproven: the KVM probe is not implemented on linux/riscv64"}
	foreign := "aarch64"
	if HostArch() == "aarch64" {
		foreign = "x86_64"
	}
	for _, tc := range []struct {
		name            string
		verdict         Verdict
		requested, arch string
		accel, reason   string // reason: a substring
		err             string // a substring of the error
		probes          int32
	}{
		{"auto, KVM works", works, "", "", "kvm", "reached long mode", "", 1},
		{"auto spelled out, KVM works", works, "auto", HostArch(), "kvm", "reached long mode", "", 1},
		{"auto, guest hangs", hangs, "", "", "tcg", "did not reach long mode in 5s", "", 1},
		{"auto, no device", noDevice, "auto", "", "tcg", "no /dev/kvm (the kvm module is not loaded", "", 1},
		{"auto, permission denied", denied, "", "", "tcg", "/dev/kvm: permission denied (run as root or join the kvm group)", "", 1},
		{"auto, unproven", unproven, "", "", "tcg", "KVM is unproven", "", 1},
		{"auto, foreign guest", works, "", foreign, "tcg", "guest arch " + foreign + " is not the host's " + HostArch(), "", 0},
		{"kvm, KVM works", works, "kvm", "", "kvm", "reached long mode", "", 1},
		{"kvm, guest hangs", hangs, "kvm", "", "", "", `accelerator = "kvm": KVM cannot run a guest on this host: /dev/kvm opens but a test guest did not reach long mode in 5s`, 1},
		{"kvm, no device", noDevice, "kvm", "", "", "", `no /dev/kvm (the kvm module is not loaded, or this is a VM without nested virtualization); set accelerator = "tcg"`, 1},
		{"kvm, permission denied", denied, "kvm", "", "", "", `permission denied (run as root or join the kvm group); set accelerator = "tcg"`, 1},
		{"kvm, unproven: allowed", unproven, "kvm", "", "kvm", "KVM is unproven", "", 1},
		{"kvm, foreign guest", works, "kvm", foreign, "", "", `guest arch ` + foreign + ` is not the host's`, 0},
		{"tcg", works, "tcg", "", "tcg", `asked for: accelerator = "tcg"`, "", 0},
		{"tcg, foreign guest", hangs, "tcg", foreign, "tcg", `asked for: accelerator = "tcg"`, "", 0},
		{"unknown", works, "hvf", "", "", "", `accelerator "hvf" is not supported; use "auto" (the default), "kvm" or "tcg"`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var probes atomic.Int32
			var gotDeadline time.Duration
			h := &Host{Probe: func(d time.Duration) Verdict { probes.Add(1); gotDeadline = d; return tc.verdict }}
			for range 2 { // the second call is answered from the cache
				accel, reason, err := h.Accelerator(tc.requested, tc.arch)
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Fatalf("Accelerator = %q, %q, %v; want an error containing %q", accel, reason, err, tc.err)
					}
					if !strings.Contains(err.Error(), `accelerator = "tcg"`) && !strings.Contains(err.Error(), "not supported") {
						t.Errorf("the error does not name the way out: %v", err)
					}
					continue
				}
				if err != nil || accel != tc.accel || !strings.Contains(reason, tc.reason) {
					t.Fatalf("Accelerator = %q, %q, %v; want %q with a reason containing %q", accel, reason, err, tc.accel, tc.reason)
				}
			}
			if got := probes.Load(); got != tc.probes {
				t.Errorf("the probe ran %d times, want %d", got, tc.probes)
			}
			if tc.probes > 0 && gotDeadline != DefaultDeadline {
				t.Errorf("the probe's deadline = %s, want %s", gotDeadline, DefaultDeadline)
			}
		})
	}
}
