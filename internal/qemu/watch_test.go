package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// watchEvent is one step of a scripted guest: the fake clock advances, the
// console and the disk counter change, then one sample is taken (a tick),
// or QEMU exits instead.
type watchEvent struct {
	advance time.Duration
	console string // appended to the console file
	ops     uint64 // added to the block-operations counter
	exit    bool   // QEMU exits (instead of a tick)
	tickToo bool   // with exit: a tick arrives too (the exit races a stall)
}

// tick advances the clock by d, nothing else happens.
func tick(d time.Duration) watchEvent { return watchEvent{advance: d} }

// The watchdog driven event by event with fakes: a console file the test
// writes, a fake counter of block operations, a fake exit, a manual ticker
// and a fake clock. The script must end at the event where the watchdog
// returns; a case wanting nil cancels the context after its script.
func TestWatch(t *testing.T) {
	const stall = 3 * time.Second
	sec := time.Second
	for _, tc := range []struct {
		name         string
		console      string // the console's content before the watch
		noQMP        bool   // no counter of block operations
		opsErr       bool   // the counter fails from the start
		laterErrFrom int    // the counter fails from this event on (0: never)
		status       error  // QEMU's exit status
		stderr       string
		events       []watchEvent
		want         error // nil, ErrStalled or ErrExited
		in           []string
	}{
		{
			name: "silent guest stalls", console: "SeaBIOS\nMARKER-LINE\n",
			stderr: "qemu-system-x86_64: warning: host doesn't support requested feature",
			events: []watchEvent{tick(sec), tick(sec), tick(sec)},
			want:   ErrStalled,
			in: []string{"the guest made no progress: nothing on the serial console and no disk I/O for 3s", "Last lines of the serial console", "MARKER-LINE",
				"QEMU said: qemu-system-x86_64: warning"},
		},
		{
			name: "console output keeps it alive, then silence", console: "boot\n",
			events: []watchEvent{
				{advance: 2 * sec, console: "a\n"}, {advance: 2 * sec, console: "b\n"}, {advance: 2 * sec, console: "c\n"},
				tick(2 * sec), tick(sec),
			},
			want: ErrStalled,
			in:   []string{"no disk I/O for 3s", "boot\na\nb\nc"},
		},
		{
			name: "disk I/O keeps a guest silent on the console alive",
			events: []watchEvent{
				{advance: 2 * sec, ops: 5}, {advance: 2 * sec, ops: 1}, {advance: 2 * sec, ops: 7},
				tick(3 * sec),
			},
			want: ErrStalled,
			in:   []string{"nothing on the serial console and no disk I/O for 3s", "is empty"},
		},
		{
			name: "without QMP only the console counts", noQMP: true, console: "x\n",
			events: []watchEvent{{advance: 2 * sec, ops: 5}, tick(sec)},
			want:   ErrStalled,
			in:     []string{"nothing on the serial console (its disk I/O could not be read: no QMP monitor) for 3s"},
		},
		{
			name: "a counter failing from the start is not watched", opsErr: true,
			events: []watchEvent{{advance: 2 * sec, ops: 5}, tick(sec)},
			want:   ErrStalled,
			in:     []string{"its disk I/O could not be read: QMP closed"},
		},
		{
			name: "a counter failing later is not progress", laterErrFrom: 2,
			events: []watchEvent{{advance: 2 * sec, ops: 5}, {advance: 2 * sec, ops: 5}, tick(2 * sec)},
			want:   ErrStalled,
			in:     []string{"no disk I/O for 3s"},
		},
		{
			name: "QEMU exits: reported at once", console: "GRUB loading.\n",
			status: errors.New("exit status 1"), stderr: "qemu-system-x86_64: could not load kernel '/nonexistent'",
			events: []watchEvent{{advance: sec, console: "Welcome\n"}, {exit: true}},
			want:   ErrExited,
			in:     []string{"QEMU exited: exit status 1 while the guest was booting", "QEMU said: qemu-system-x86_64: could not load kernel '/nonexistent'", "GRUB loading.\nWelcome"},
		},
		{
			name: "QEMU exits cleanly (a guest reboot under -no-reboot)", console: "reboot: Restarting system\n",
			events: []watchEvent{{exit: true}},
			want:   ErrExited,
			in:     []string{"QEMU exited: exit status 0 while the guest was booting (it powered off or rebooted: QEMU runs with -no-reboot)", "Restarting system"},
		},
		{
			name: "an exit racing a stall is reported as the exit", status: errors.New("signal: killed"),
			events: []watchEvent{tick(2 * sec), {advance: 2 * sec, exit: true, tickToo: true}},
			want:   ErrExited,
			in:     []string{"signal: killed"},
		},
		{
			name: "progress until the context ends: no error", console: "a\n",
			events: []watchEvent{{advance: 2 * sec, console: "b\n"}, {advance: 2 * sec, ops: 1}, {advance: 2 * sec, console: "c\n"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			console := filepath.Join(t.TempDir(), "console.log")
			if err := os.WriteFile(console, []byte(tc.console), 0o644); err != nil {
				t.Fatal(err)
			}
			var ops uint64
			event := 0
			clock := time.Unix(1e9, 0)
			sampled := make(chan struct{})
			ticks := make(chan time.Time)
			exited := make(chan struct{})
			w := watcher{
				console: console,
				exited:  exited,
				status:  func() error { return tc.status },
				stderr:  func() string { return tc.stderr },
				tick:    ticks,
				now: func() time.Time {
					now := clock
					sampled <- struct{}{}
					return now
				},
				opts: WatchOptions{Stall: stall},
			}
			if !tc.noQMP {
				w.blockOps = func() (uint64, error) {
					if tc.opsErr || tc.laterErrFrom != 0 && event >= tc.laterErrFrom {
						return 0, errors.New("QMP closed")
					}
					return ops, nil
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			result := make(chan error, 1)
			go func() { result <- w.run(ctx) }()
			<-sampled // the start

			var got error
			returned := false
			for i, ev := range tc.events {
				event = i + 1
				clock = clock.Add(ev.advance)
				ops += ev.ops
				if ev.console != "" {
					f, err := os.OpenFile(console, os.O_APPEND|os.O_WRONLY, 0)
					if err != nil {
						t.Fatal(err)
					}
					f.WriteString(ev.console)
					f.Close()
				}
				if ev.exit {
					close(exited)
					if !ev.tickToo {
						break
					}
				}
				// The tick, then the sample it causes; either may be
				// pre-empted by the watchdog returning.
				select {
				case ticks <- clock:
				case got = <-result:
					returned = true
				}
				if !returned {
					select {
					case <-sampled:
					case got = <-result:
						returned = true
					}
				}
				if returned {
					if i != len(tc.events)-1 {
						t.Fatalf("the watchdog returned at event %d of %d: %v", i+1, len(tc.events), got)
					}
					break
				}
			}
			if !returned {
				if tc.want == nil {
					cancel()
				}
				select {
				case got = <-result:
				case <-time.After(10 * time.Second): // only stops a hung test
					t.Fatal("the watchdog did not return after the last event")
				}
			}
			if !errors.Is(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("watch = %v, want %v", got, tc.want)
			}
			var ge *GuestError
			if got != nil && !errors.As(got, &ge) {
				t.Fatalf("watch = %T, want a *GuestError", got)
			}
			for _, s := range tc.in {
				if !strings.Contains(got.Error(), s) {
					t.Errorf("the error lacks %q:\n%v", s, got)
				}
			}
		})
	}
}

// A real QEMU on a blank disk: SeaBIOS finds nothing to boot and waits,
// so the watchdog reports a stall with QMP's disk counters read; a QEMU
// killed while watched is reported at once with its exit status.
func TestMachineWatch(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "blank.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := cleanup.Open(filepath.Join(dir, "state"), "watch test")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Disk: disk, SSHPort: port, QMPSocket: filepath.Join(dir, "qmp.sock"), ConsoleLog: filepath.Join(dir, "console.log"), MemoryMiB: 128}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // only stops a hung test
	defer cancel()

	m, err := Start(ctx, o, j)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.qmp.BlockOps(); err != nil {
		t.Errorf("query-blockstats of a real QEMU: %v", err)
	}
	err = m.Watch(ctx, WatchOptions{Stall: 2 * time.Second, Interval: 100 * time.Millisecond})
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "nothing on the serial console and no disk I/O for 2s") {
		t.Errorf("Watch of a guest with nothing to boot = %v, want a stall with the disk watched", err)
	}
	t.Logf("stall: %v", err)
	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}

	m, err = Start(ctx, o, j)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Quit()
	unix.Kill(m.Pid(), unix.SIGKILL)
	err = m.Watch(ctx, WatchOptions{Stall: time.Minute})
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "signal: killed") {
		t.Errorf("Watch of a killed QEMU = %v, want its exit status", err)
	}
}
