package hostcap

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// KVM exit reasons (linux/kvm.h) the probe tells apart.
const (
	exitIO            = 2
	exitHLT           = 5
	exitShutdown      = 8
	exitFailEntry     = 9
	exitInternalError = 17
)

// guestExit is one return of KVM_RUN.
type guestExit struct {
	reason uint32
	// KVM_EXIT_IO
	out  bool
	port uint16
	data []byte
	// KVM_EXIT_FAIL_ENTRY: the hardware's reason; KVM_EXIT_INTERNAL_ERROR:
	// the suberror.
	detail uint64
}

// vcpu is the test guest, ready to run: one vCPU under /dev/kvm, or a
// fake in tests. Its methods other than interrupt are called from the
// OS thread that opened it.
type vcpu interface {
	// enter runs the vCPU until its next exit (KVM_RUN). An interrupted
	// run returns syscall.EINTR.
	enter() (guestExit, error)
	// longMode reports EFER.LMA.
	longMode() (bool, error)
	// interrupt, from another goroutine, makes a running enter return
	// EINTR, and every later one at once. A no-op after close.
	interrupt()
	close()
}

// kickGrace is how long an enter interrupted at the deadline may take to
// return before the probe gives up on it.
const kickGrace = time.Second

// probe opens the test guest and runs it on a locked OS thread (KVM_RUN
// blocks its thread), judged by watchGuest. At the deadline it interrupts
// the guest; if enter still does not return within kickGrace, the thread
// is abandoned and the verdict says so. The caller is never held much
// longer than deadline + kickGrace. open returns a nil vcpu and the
// verdict on failure.
func probe(open func() (vcpu, Verdict), deadline time.Duration) Verdict {
	start := time.Now()
	var stopped atomic.Bool
	opened := make(chan vcpu, 1)
	done := make(chan Verdict, 1)
	go func() {
		// A hung KVM_RUN keeps this thread; it is never handed back to the
		// scheduler, and exits with the goroutine.
		runtime.LockOSThread()
		g, v := open()
		opened <- g
		if g == nil {
			done <- v
			return
		}
		v = watchGuest(g, &stopped, deadline)
		g.close()
		done <- v
	}()

	timer := time.NewTimer(deadline)
	defer timer.Stop()
	var g vcpu
	select {
	case g = <-opened:
	case <-timer.C:
		return took(Verdict{Reason: fmt.Sprintf("opening /dev/kvm and making a test VM took more than %s", round(deadline))}, start)
	}
	select {
	case v := <-done:
		return took(v, start)
	case <-timer.C:
	}
	stopped.Store(true)
	g.interrupt()
	select {
	case v := <-done:
		return took(v, start)
	case <-time.After(kickGrace):
		return took(Verdict{Reason: fmt.Sprintf("/dev/kvm opens but a test guest did not finish in %s, and KVM_RUN did not return when interrupted", round(deadline))}, start)
	}
}

func took(v Verdict, start time.Time) Verdict {
	v.Took = time.Since(start)
	if v.Usable {
		v.Reason += fmt.Sprintf(" in %s", round(v.Took))
	}
	return v
}

// watchGuest runs g until it halts and judges it: usable if it wrote
// exactly guestOutput to the serial port, in good time, and halted in long
// mode. Once stopped is set (the deadline passed and
// g was interrupted) it returns at the next exit, saying how far the guest
// got.
func watchGuest(g vcpu, stopped *atomic.Bool, deadline time.Duration) Verdict {
	var p guestProgress
	for {
		if stopped.Load() {
			return Verdict{Reason: p.short(deadline, time.Now())}
		}
		x, err := g.enter()
		if errors.Is(err, syscall.EINTR) {
			continue // the deadline's interrupt, or a signal for the Go runtime
		}
		if err != nil {
			return ioctlFailed("KVM_RUN", err)
		}
		switch x.reason {
		case exitIO:
			if x.out && x.port == serialPort {
				p.wrote(x.data, time.Now())
			}
			if len(p.out) > len(guestOutput) {
				return Verdict{Reason: fmt.Sprintf("/dev/kvm opens but a test guest went astray: it wrote %s", p.quote())}
			}
			continue
		case exitHLT:
			if string(p.out) != guestOutput {
				return Verdict{Reason: fmt.Sprintf("/dev/kvm opens but a test guest went astray: it wrote %s before it halted", p.quote())}
			}
			lm, err := g.longMode()
			if err != nil {
				return ioctlFailed("KVM_GET_SREGS", err)
			}
			if !lm {
				return Verdict{Reason: "/dev/kvm opens but a test guest wrote its long-mode marker without EFER.LMA set"}
			}
			return Verdict{Usable: true, Reason: fmt.Sprintf("a test guest reached long mode under /dev/kvm and ran %dMi loop iterations", guestLoops)}
		case exitShutdown:
			return Verdict{Reason: fmt.Sprintf("/dev/kvm opens but a test guest was shut down (a triple fault; %s)", p.stage())}
		case exitFailEntry:
			return Verdict{Reason: fmt.Sprintf("/dev/kvm opens but KVM could not enter a test guest (hardware entry failure 0x%x; %s)", x.detail, p.stage())}
		case exitInternalError:
			return Verdict{Reason: fmt.Sprintf("/dev/kvm opens but KVM failed inside a test guest (internal error, suberror %d; %s)", x.detail, p.stage())}
		default:
			return Verdict{Reason: fmt.Sprintf("/dev/kvm opens but a test guest stopped with KVM exit reason %d (%s)", x.reason, p.stage())}
		}
	}
}

// guestProgress is what the guest wrote and when (see guest.go: R in real
// mode, P in protected mode, L in long mode, a dot per Mi loop
// iterations, then the marker).
type guestProgress struct {
	out    []byte
	inLong time.Time // when L came
	dots   int
}

func (p *guestProgress) wrote(b []byte, now time.Time) {
	for _, c := range b {
		switch {
		case c == 'L' && p.inLong.IsZero():
			p.inLong = now
		case c == '.':
			p.dots++
		}
	}
	p.out = append(p.out, b...)
}

// stage says how far the guest got.
func (p *guestProgress) stage() string {
	s := string(p.out)
	switch {
	case s == "":
		return "it wrote nothing, not even in real mode"
	case s == "R":
		return "it ran in real mode, not in protected mode"
	case s == "RP":
		return "it ran in real mode and protected mode, not in long mode"
	case strings.HasPrefix(s, "RPL") && strings.Trim(s[3:], ".") == "":
		return fmt.Sprintf("it reached long mode and ran %dMi of %dMi loop iterations", p.dots, guestLoops)
	}
	return "it wrote " + p.quote()
}

// short is the verdict's reason when the deadline passed (now): the guest
// is stuck, or runs far too slowly to be virtualized (an instruction
// emulator inside the host's KVM takes a microsecond per instruction,
// hardware a fraction of a nanosecond).
func (p *guestProgress) short(deadline time.Duration, now time.Time) string {
	if p.inLong.IsZero() {
		return fmt.Sprintf("/dev/kvm opens but a test guest did not reach long mode in %s (%s)", round(deadline), p.stage())
	}
	rate := fmt.Sprintf("%.1f million loop iterations/s", float64(p.dots<<20)/now.Sub(p.inLong).Seconds()/1e6)
	if p.dots == 0 {
		rate = fmt.Sprintf("less than 1Mi loop iterations in %s", round(now.Sub(p.inLong)))
	}
	return fmt.Sprintf("/dev/kvm opens but a test guest ran %s in long mode, far below hardware speed, and did not finish its %d Mi iterations in %s", rate, guestLoops, round(deadline))
}

func (p *guestProgress) quote() string {
	s := string(p.out)
	if len(s) > 40 {
		s = s[:20] + "..." + s[len(s)-20:]
	}
	return fmt.Sprintf("%q", s)
}

// openFailed is the verdict when /dev/kvm does not open.
func openFailed(err error) Verdict {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENXIO), errors.Is(err, syscall.ENODEV):
		return Verdict{Reason: "no /dev/kvm (the kvm module is not loaded, or this is a VM without nested virtualization)"}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return Verdict{Reason: "/dev/kvm: permission denied (run as root or join the kvm group)"}
	}
	return Verdict{Reason: fmt.Sprintf("/dev/kvm: %v", err)}
}

// ioctlFailed is the verdict when an ioctl of the probe fails. Errors that
// mean the ioctl did not understand its arguments point at the probe: Err
// is set.
func ioctlFailed(name string, err error) Verdict {
	switch {
	case errors.Is(err, syscall.EBUSY):
		return Verdict{Reason: fmt.Sprintf("%s: %v (another hypervisor holds VT-x?)", name, err)}
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.EFAULT), errors.Is(err, syscall.ENOTTY), errors.Is(err, syscall.E2BIG):
		return Verdict{Reason: fmt.Sprintf("%s refused the KVM probe's arguments: %v", name, err), Err: fmt.Errorf("%s: %w", name, err)}
	}
	return Verdict{Reason: fmt.Sprintf("%s: %v", name, err)}
}

// round prints a duration without noise: 5s, 1.5s, 300ms, 42µs.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}
