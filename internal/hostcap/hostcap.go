// Package hostcap holds what the build host can do, probed once and cached
// for the life of the process (DESIGN.md, decision 9). Today: whether KVM
// really runs a guest, and the accelerator that follows from it. Opening
// /dev/kvm proves nothing: on the CI's hosts it opens, SeaBIOS, GRUB and a
// kernel's real-mode setup run, and then the kernel seems to hang. It does
// not hang: KVM there executes about a million guest instructions per
// second (each one emulated, measured with this package's guest and with
// QEMU), so the decompressor alone would take many minutes. The proof is
// therefore a tiny guest, run straight through /dev/kvm's ioctls, that
// starts in real mode, switches to 64-bit long mode as a kernel does,
// runs a loop that takes hardware a fraction of a second, and writes a
// marker to its serial port, all within a deadline: seconds, not a boot.
//
// The probe is implemented for linux/amd64 hosts. Elsewhere KVM is
// unproven: "auto" picks TCG, an explicit "kvm" is allowed with a warning.
// It knows nothing of Packer or QEMU.
package hostcap

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/isalevel"
)

// Accelerators, as QEMU's -accel names them, and the default choice.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// DefaultDeadline bounds the KVM probe: a guest that has not reached long
// mode by then never will (it takes milliseconds where KVM works).
const DefaultDeadline = 5 * time.Second

// Verdict is what the KVM probe found.
type Verdict struct {
	// Usable: a test guest reached long mode under /dev/kvm and wrote
	// its marker.
	Usable bool
	// Unproven: the probe does not exist for this host (not linux/amd64);
	// Usable is false.
	Unproven bool
	// Reason says why, in one line for a human: "/dev/kvm opens but a
	// test guest did not reach long mode in 5s (...)".
	Reason string
	// Took is the probe's wall time.
	Took time.Duration
	// Err is set when an ioctl refused the probe's own arguments (EINVAL,
	// EFAULT, ENOTTY...), which points at the probe rather than the host.
	// Usable is false.
	Err error
}

// Prober runs the KVM probe, giving the guest deadline to finish. It must
// return soon after the deadline even if the guest hangs.
type Prober func(deadline time.Duration) Verdict

// Host caches one host's verdicts. The zero value is not usable; the
// package's functions use the real host.
type Host struct {
	Probe    Prober
	Deadline time.Duration // default DefaultDeadline

	once sync.Once
	kvm  Verdict
}

var (
	hostMu sync.Mutex
	host   = &Host{Probe: ProbeKVM}
)

func current() *Host {
	hostMu.Lock()
	defer hostMu.Unlock()
	return host
}

// SetProber makes the package's functions ask p, with a fresh cache,
// until restore is called: for tests of code that asks KVM() or
// Accelerator().
func SetProber(p Prober) (restore func()) {
	hostMu.Lock()
	defer hostMu.Unlock()
	old := host
	host = &Host{Probe: p}
	return func() {
		hostMu.Lock()
		defer hostMu.Unlock()
		host = old
	}
}

// KVM is the real host's verdict on KVM, probed on the first call (up to
// DefaultDeadline plus a second) and cached for the life of the process.
func KVM() Verdict { return current().KVM() }

// Accelerator is the real host's choice of accelerator: see
// Host.Accelerator.
func Accelerator(requested, guestArch string) (accel, reason string, err error) {
	return current().Accelerator(requested, guestArch)
}

// KVM is h's verdict, probed on the first call and cached.
func (h *Host) KVM() Verdict {
	h.once.Do(func() {
		d := h.Deadline
		if d <= 0 {
			d = DefaultDeadline
		}
		h.kvm = h.Probe(d)
	})
	return h.kvm
}

// Accelerator turns the accelerator a user asked for ("", "auto", "kvm" or
// "tcg") and the guest's architecture (QEMU's name: x86_64, aarch64; ""
// for the host's) into "kvm" or "tcg", with one line saying why:
//   - "" or "auto": kvm only if the probe proved it runs a guest here (and
//     the guest's architecture is the host's), else tcg with the reason;
//   - "kvm": kvm if proven, or unproven on a host without the probe (the
//     reason says so: warn); otherwise an error naming the reason and the
//     way out (accelerator = "tcg", or "auto");
//   - "tcg": tcg.
//
// Anything else is an error naming the value.
func (h *Host) Accelerator(requested, guestArch string) (accel, reason string, err error) {
	if guestArch == "" {
		guestArch = HostArch()
	}
	foreign := ""
	if guestArch != HostArch() {
		foreign = fmt.Sprintf("guest arch %s is not the host's %s", guestArch, HostArch())
	}
	switch requested {
	case AccelTCG:
		return AccelTCG, `asked for: accelerator = "tcg"`, nil
	case "", AccelAuto:
		if foreign != "" {
			return AccelTCG, foreign, nil
		}
		if v := h.KVM(); v.Usable {
			return AccelKVM, v.Reason, nil
		} else {
			return AccelTCG, v.Reason, nil
		}
	case AccelKVM:
		if foreign != "" {
			return "", "", fmt.Errorf(`accelerator = "kvm": %s, KVM cannot run it; set accelerator = "tcg" (or "auto")`, foreign)
		}
		v := h.KVM()
		if v.Usable || v.Unproven {
			return AccelKVM, v.Reason, nil
		}
		return "", "", fmt.Errorf(`accelerator = "kvm": KVM cannot run a guest on this host: %s; set accelerator = "tcg" (or "auto", which uses KVM only where a test guest runs)`, v.Reason)
	}
	return "", "", fmt.Errorf(`accelerator %q is not supported; use "auto" (the default), "kvm" or "tcg"`, requested)
}

// CPU models for TCG, by the level the image needs (QEMU's
// target/i386/cpu.c feature tables). glibc picks its string and memory
// functions by the CPU's features, and TCG runs the SSE2 ones fastest.
// Measured on a guest workload (dpkg --verify, gzip, sort, python3) with
// QEMU 7.2 (bench/tcg-cpu-models.sh): quiet host qemu64 40.9 s, Nehalem
// 50.6 s, max 49.5 s; two rounds on a loaded host 67-89 s, 102-115 s,
// 121-127 s. So each image gets the least model
// that runs it: qemu64 (packer-plugin-qemu's default too) for the
// baseline, Nehalem, the oldest named model with every x86-64-v2 feature
// (CX16, LAHF, POPCNT, SSE4.1, SSE4.2, SSSE3), for v2, and max for v3
// (AVX2) or a level not known (a guest of another distribution boots).
const (
	TCGBaselineModel = "qemu64"
	TCGV2Model       = "Nehalem"
	TCGMaxModel      = "max"
)

// CPUModel is the -cpu model for accel and an image that needs level, and
// why, in a few words. Under KVM, "host" (the host's own CPU passed
// through). Under TCG, the least model that runs the image (see
// TCGBaselineModel). Errors: an x86-64-v4 image under TCG, which emulates
// no AVX-512.
func CPUModel(accel string, level isalevel.Level) (model, why string, err error) {
	if accel == AccelKVM {
		return "host", "the host's CPU, passed through by KVM", nil
	}
	switch level {
	case isalevel.Baseline:
		return TCGBaselineModel, fmt.Sprintf("the image needs %s; TCG runs glibc's SSE2 code fastest", level), nil
	case isalevel.V2:
		return TCGV2Model, fmt.Sprintf("the image needs %s (SSE4.2, POPCNT), the least model that has it", level), nil
	case isalevel.V3:
		return TCGMaxModel, fmt.Sprintf("the image needs %s (AVX2), which only max has under TCG", level), nil
	case isalevel.V4:
		return "", "", fmt.Errorf("the image needs %s (AVX-512), which QEMU's TCG does not emulate: boot it under KVM on a host with AVX-512, or set cpu_model", level)
	}
	return TCGMaxModel, "the image's x86-64 level is not known, max boots any", nil
}

// HostArch is the host's architecture as QEMU names it (x86_64, aarch64,
// i386; else Go's GOARCH).
func HostArch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i386"
	}
	return runtime.GOARCH
}
