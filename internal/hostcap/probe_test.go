package hostcap

import (
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeVCPU plays a scripted guest: its exits in order, then it hangs in
// enter until interrupted (or forever, if deaf).
type fakeVCPU struct {
	exits []guestExit
	lm    bool
	deaf  bool // interrupt does not make a hung enter return

	mu          sync.Mutex
	interrupted chan struct{}
	release     chan struct{} // closed by the test's cleanup: a deaf enter returns
	closed      bool
}

func newFake(t *testing.T, f *fakeVCPU) *fakeVCPU {
	f.interrupted = make(chan struct{})
	f.release = make(chan struct{})
	t.Cleanup(func() { close(f.release) })
	return f
}

func (f *fakeVCPU) enter() (guestExit, error) {
	if len(f.exits) > 0 {
		x := f.exits[0]
		f.exits = f.exits[1:]
		return x, nil
	}
	if f.deaf {
		<-f.release
	} else {
		<-f.interrupted
	}
	return guestExit{}, syscall.EINTR
}

func (f *fakeVCPU) longMode() (bool, error) { return f.lm, nil }

func (f *fakeVCPU) interrupt() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.interrupted:
	default:
		close(f.interrupted)
	}
}

func (f *fakeVCPU) close() { f.mu.Lock(); f.closed = true; f.mu.Unlock() }

// serial is the exits of a guest writing s to its serial port, a byte at
// a time as `outb` does.
func serial(s string) []guestExit {
	var xs []guestExit
	for i := range len(s) {
		xs = append(xs, guestExit{reason: exitIO, out: true, port: serialPort, data: []byte{s[i]}})
	}
	return xs
}

func exits(xs ...[]guestExit) []guestExit {
	var all []guestExit
	for _, x := range xs {
		all = append(all, x...)
	}
	return all
}

// The host side of the probe against fake guests and failing opens: the
// verdict and its reason for each way a host can fail, and the caller is
// never held past the deadline plus the kick's grace.
func TestProbeFake(t *testing.T) {
	hlt := []guestExit{{reason: exitHLT}}
	const short = 200 * time.Millisecond
	for _, tc := range []struct {
		name   string
		fake   *fakeVCPU // nil: open fails with failed
		hangs  bool      // the deadline passes: short; else long enough for a loaded host
		failed Verdict
		usable bool
		reason string // a substring of the reason
		err    bool
	}{
		{name: "works", fake: &fakeVCPU{exits: exits(serial(guestOutput), hlt), lm: true},
			usable: true, reason: "a test guest reached long mode under /dev/kvm and ran 256Mi loop iterations in "},
		{name: "hangs in protected mode", hangs: true, fake: &fakeVCPU{exits: serial("RP")},
			reason: "/dev/kvm opens but a test guest did not reach long mode in 200ms (it ran in real mode and protected mode, not in long mode)"},
		{name: "hangs before real mode", hangs: true, fake: &fakeVCPU{},
			reason: "did not reach long mode in 200ms (it wrote nothing, not even in real mode)"},
		{name: "crawls in long mode", hangs: true, fake: &fakeVCPU{exits: serial("RPL..")},
			reason: " million loop iterations/s in long mode, far below hardware speed, and did not finish its 256 Mi iterations in 200ms"},
		{name: "hangs and KVM_RUN ignores the kick", hangs: true, fake: &fakeVCPU{exits: serial("R"), deaf: true},
			reason: "/dev/kvm opens but a test guest did not finish in 200ms, and KVM_RUN did not return when interrupted"},
		{name: "no device", failed: openFailed(syscall.ENOENT),
			reason: "no /dev/kvm (the kvm module is not loaded, or this is a VM without nested virtualization)"},
		{name: "permission denied", failed: openFailed(syscall.EACCES),
			reason: "/dev/kvm: permission denied (run as root or join the kvm group)"},
		{name: "busy", failed: ioctlFailed("KVM_CREATE_VM", syscall.EBUSY),
			reason: "KVM_CREATE_VM: device or resource busy (another hypervisor holds VT-x?)"},
		{name: "ioctl refuses the probe's arguments", failed: ioctlFailed("KVM_SET_SREGS", syscall.EINVAL),
			reason: "KVM_SET_SREGS refused the KVM probe's arguments: invalid argument", err: true},
		{name: "triple fault", fake: &fakeVCPU{exits: exits(serial("RP"), []guestExit{{reason: exitShutdown}})},
			reason: "/dev/kvm opens but a test guest was shut down (a triple fault; it ran in real mode and protected mode, not in long mode)"},
		{name: "entry failure", fake: &fakeVCPU{exits: []guestExit{{reason: exitFailEntry, detail: 0x21}}},
			reason: "hardware entry failure 0x21"},
		{name: "wrong marker", fake: &fakeVCPU{exits: exits(serial("RPLM32 OK\n"), hlt), lm: true},
			reason: `went astray: it wrote "RPLM32 OK\n" before it halted`},
		{name: "marker without long mode", fake: &fakeVCPU{exits: exits(serial(guestOutput), hlt)},
			reason: "without EFER.LMA set"},
		{name: "output on other ports is ignored", fake: &fakeVCPU{exits: exits([]guestExit{{reason: exitIO, out: true, port: 0x80, data: []byte("x")}}, serial(guestOutput), hlt), lm: true},
			usable: true, reason: "reached long mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			open := func() (vcpu, Verdict) { return nil, tc.failed }
			if tc.fake != nil {
				f := newFake(t, tc.fake)
				open = func() (vcpu, Verdict) { return f, Verdict{} }
			}
			deadline := time.Minute
			if tc.hangs {
				deadline = short
			}
			done := make(chan Verdict, 1)
			go func() { done <- probe(open, deadline) }()
			var v Verdict
			select {
			case v = <-done:
			case <-time.After(deadline + kickGrace + 10*time.Second):
				t.Fatal("the probe held its caller far past its deadline")
			}
			t.Logf("%+v", v)
			if v.Usable != tc.usable || !strings.Contains(v.Reason, tc.reason) || (v.Err != nil) != tc.err || v.Unproven {
				t.Errorf("verdict %+v, want usable %v, reason containing %q, error %v", v, tc.usable, tc.reason, tc.err)
			}
			if v.Took <= 0 {
				t.Errorf("Took = %s", v.Took)
			}
			if tc.fake != nil && !tc.fake.deaf {
				tc.fake.mu.Lock()
				closed := tc.fake.closed
				tc.fake.mu.Unlock()
				if !closed {
					t.Error("the guest was not closed")
				}
			}
		})
	}
}

var (
	errENOENT error = syscall.ENOENT
	errEACCES error = syscall.EACCES
)
