package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// A guest the watchdog gave up on: it stalled, or QEMU exited.
var (
	ErrStalled = errors.New("the guest made no progress")
	ErrExited  = errors.New("QEMU exited")
)

// GuestError says why Watch gave up on a guest and what the guest showed:
// the end of its serial console and, when QEMU exited, QEMU's standard
// error. errors.Is(err, ErrStalled) or errors.Is(err, ErrExited) tells
// which.
type GuestError struct {
	Err     error  // ErrStalled or ErrExited
	Detail  string // what was watched and for how long, or QEMU's exit status
	Stderr  string // QEMU's standard error so far, trimmed ("" if it said nothing)
	Console string // the serial console file
	Tail    string // its last lines ("" if it is empty)
}

func (e *GuestError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %s", e.Err, e.Detail)
	if e.Stderr != "" {
		b.WriteString("\nQEMU said: " + e.Stderr)
	}
	if e.Tail != "" {
		fmt.Fprintf(&b, "\nLast lines of the serial console (%s):\n%s", e.Console, e.Tail)
	} else if e.Console != "" {
		fmt.Fprintf(&b, "\nThe serial console (%s) is empty.", e.Console)
	}
	return b.String()
}

func (e *GuestError) Unwrap() error { return e.Err }

// WatchOptions tune Machine.Watch.
type WatchOptions struct {
	Stall     time.Duration // no progress this long is a stall; must be > 0
	Interval  time.Duration // how often progress is sampled; default 1 s (less if Stall is shorter)
	TailLines int           // console lines in the error; default 40
}

// Watch waits while the guest boots and returns when ctx ends (nil), when
// the guest makes no progress for o.Stall, or at once when QEMU exits (a
// *GuestError either way). Progress is the serial console file growing, or
// the guest's block I/O (read and write operations of its drives, from QMP
// query-blockstats) changing: a kernel that logs only to a screen still
// reads its disk. Without QMP only the console is watched.
func (m *Machine) Watch(ctx context.Context, o WatchOptions) error {
	if o.Stall <= 0 {
		return fmt.Errorf("qemu: stall timeout %s must be positive", o.Stall)
	}
	w := watcher{
		console: m.Opts.ConsoleLog,
		exited:  m.done,
		status:  func() error { return m.err },
		stderr:  func() string { return strings.TrimSpace(m.stderr.String()) },
		now:     time.Now,
		opts:    o,
	}
	if q := m.qmp; q != nil {
		w.blockOps = q.BlockOps
	}
	interval := o.Interval
	if interval <= 0 {
		interval = min(time.Second, o.Stall/10)
	}
	t := time.NewTicker(max(interval, time.Millisecond))
	defer t.Stop()
	w.tick = t.C
	return w.run(ctx)
}

// watcher is Watch's loop with its sources injectable: the console file,
// a block-operations counter (nil: not watched), QEMU's exit, the ticker
// and the clock.
type watcher struct {
	console  string
	blockOps func() (uint64, error)
	exited   <-chan struct{}
	status   func() error  // QEMU's exit status, once exited is closed
	stderr   func() string // what QEMU said so far
	tick     <-chan time.Time
	now      func() time.Time
	opts     WatchOptions
}

func (w *watcher) run(ctx context.Context) error {
	size := fileSize(w.console)
	var ops uint64
	var opsErr error
	if w.blockOps == nil {
		opsErr = errors.New("no QMP monitor")
	} else {
		ops, opsErr = w.blockOps()
	}
	// The disk is watched only if it could be read at the start: a later
	// failure (QEMU exiting) skips one sample.
	watchIO := opsErr == nil
	last := w.now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.exited:
			return w.exitError()
		case <-w.tick:
		}
		progress := false
		if s := fileSize(w.console); s != size {
			size, progress = s, true
		}
		if watchIO {
			if n, err := w.blockOps(); err == nil && n != ops {
				ops, progress = n, true
			}
		}
		now := w.now()
		if progress {
			last = now
			continue
		}
		if idle := now.Sub(last); idle >= w.opts.Stall {
			// An exit that raced the tick is the better report.
			select {
			case <-w.exited:
				return w.exitError()
			default:
			}
			what := "nothing on the serial console and no disk I/O"
			if !watchIO {
				what = fmt.Sprintf("nothing on the serial console (its disk I/O could not be read: %v)", opsErr)
			}
			return w.guestError(ErrStalled, fmt.Sprintf("%s for %s", what, w.opts.Stall))
		}
	}
}

func (w *watcher) exitError() error {
	detail := "exit status 0 while the guest was booting (it powered off or rebooted: QEMU runs with -no-reboot)"
	if status := w.status(); status != nil {
		detail = status.Error() + " while the guest was booting"
	}
	return w.guestError(ErrExited, detail)
}

func (w *watcher) guestError(kind error, detail string) error {
	n := w.opts.TailLines
	if n <= 0 {
		n = 40
	}
	return &GuestError{Err: kind, Detail: detail, Stderr: w.stderr(), Console: w.console, Tail: Tail(w.console, n)}
}

// fileSize is the file's size, or -1 if it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// BlockOps is the sum of the read and write operations of all the guest's
// drives so far (QMP query-blockstats: rd_operations, wr_operations).
func (q *QMP) BlockOps() (uint64, error) {
	raw, err := q.Execute("query-blockstats", nil)
	if err != nil {
		return 0, err
	}
	var drives []struct {
		Stats struct {
			Rd uint64 `json:"rd_operations"`
			Wr uint64 `json:"wr_operations"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(raw, &drives); err != nil {
		return 0, fmt.Errorf("qmp query-blockstats: %w", err)
	}
	var n uint64
	for _, d := range drives {
		n += d.Stats.Rd + d.Stats.Wr
	}
	return n, nil
}
