package boottest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// run is one boot test in progress.
type run struct {
	o       Options
	id, dir string
	overlay string
	key     qemu.Key
	img     *image

	m       *qemu.Machine
	start   time.Time
	sshPort int
	ports   map[int]int // guest port -> host port

	mu     sync.Mutex
	waits  []*wait
	client *ssh.Client
	// Closed when `systemctl is-system-running --wait` answered: the boot
	// finished, with state (running, degraded...) or stateErr.
	booted   chan struct{}
	asked    bool            // systemState runs, and closes booted when it ends
	sysCtx   context.Context // the life of systemState
	bootedAt time.Duration
	state    string
	failed   string // systemctl --failed, when not running
	stateErr error
}

// wait is one condition the boot must meet.
type wait struct {
	name string
	met  time.Duration // from power-on; 0 while not met
	last string        // what the last try saw
}

func (t *run) setWait(w *wait, met bool, last string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if met && w.met == 0 {
		w.met = max(time.Since(t.start), time.Millisecond)
		t.o.Log(fmt.Sprintf("%s: met %s after power-on", w.name, diskimage.FormatDuration(w.met)))
	}
	w.last = last
}

// unmet lists the waits not met yet, each with what it last saw when
// last is true.
func (t *run) unmet(last bool) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, w := range t.waits {
		if w.met == 0 {
			s := w.name
			if last && w.last != "" {
				s += " (last: " + w.last + ")"
			}
			out = append(out, s)
		}
	}
	return out
}

func (t *run) fail(what, detail string) *Failure {
	return &Failure{What: what, Detail: detail, Console: t.o.ConsoleLog, Tail: qemu.Tail(t.o.ConsoleLog, TailLines)}
}

// guestPorts is every guest port to forward, sorted, without SSH's.
func (o *Options) guestPorts() ([]int, error) {
	set := map[int]bool{}
	for _, p := range o.TCPPorts {
		set[p] = true
	}
	for _, p := range o.ForwardPorts {
		set[p] = true
	}
	for _, h := range o.HTTP {
		p, err := h.port()
		if err != nil {
			return nil, err
		}
		set[p] = true
	}
	var out []int
	for p := range set {
		if p != 22 || !o.SSH {
			out = append(out, p)
		}
	}
	sort.Ints(out)
	return out, nil
}

// port is the guest port an HTTP check's URL names.
func (h HTTPCheck) port() (int, error) {
	u, err := url.Parse(h.URL)
	if err != nil {
		return 0, err
	}
	if p := u.Port(); p != "" {
		return strconv.Atoi(p)
	}
	if u.Scheme == "https" {
		return 443, nil
	}
	return 80, nil
}

// boot starts the machine on the overlay, waits, checks and runs the
// inline commands; QEMU is gone when it returns.
func (t *run) boot(ctx context.Context) (res *Result, err error) {
	o := t.o
	var err2 error
	if t.sshPort, err2 = qemu.FreePort(); err2 != nil {
		return nil, err2
	}
	guest, err := o.guestPorts()
	if err != nil {
		return nil, err
	}
	t.ports = map[int]int{22: t.sshPort}
	netdev, err := qemu.UserNetdev(o.Extra)
	if err != nil {
		return nil, err
	}
	if netdev == "" {
		netdev = "user,id=net0"
	}
	for _, g := range guest {
		hp, err := qemu.FreePort()
		if err != nil {
			return nil, err
		}
		t.ports[g] = hp
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", hp, g)
	}
	extra := append([][]string{{"-netdev", netdev}}, o.Extra...)
	tg := t.img.target
	mo := qemu.Options{
		Binary: tg.Binary, Arch: tg.Arch, Accelerator: tg.Accel, CPUModel: t.img.cpu,
		CPUs: o.CPUs, MemoryMiB: o.Memory, Firmware: tg.Firmware,
		Disk: t.overlay, DiskFormat: "qcow2", Seed: t.img.seed,
		SSHPort: t.sshPort, QMPSocket: filepath.Join(t.dir, "qmp.sock"), ConsoleLog: o.ConsoleLog,
		Extra: extra,
	}
	if tg.Firmware == qemu.FirmwareUEFI {
		// The run's own copy: the firmware writes its boot entries there.
		mo.OVMFCode = tg.Code
		mo.OVMFVars = filepath.Join(t.dir, filepath.Base(tg.Vars))
		if _, err := diskimage.Copy(ctx, tg.Vars, mo.OVMFVars, nil); err != nil {
			return nil, fmt.Errorf("copying the UEFI variables %s: %w", tg.Vars, err)
		}
	}
	o.Log(fmt.Sprintf("Accelerator: %s (%s); CPU model %s (%s)", tg.Accel, tg.AccelReason, t.img.cpu, t.img.why))
	t.m, err = qemu.Start(ctx, mo, o.Journal)
	if err != nil {
		return nil, fmt.Errorf("starting QEMU: %w", err)
	}
	t.start = time.Now()
	// systemd's answer on the boot may come after the waits are met; the
	// checks wait for it, up to boot_timeout.
	sysCtx, cancelSys := context.WithDeadline(ctx, t.start.Add(o.BootTimeout))
	t.sysCtx = sysCtx
	t.booted = make(chan struct{})
	defer func() {
		cancelSys()
		t.mu.Lock()
		if t.client != nil {
			t.client.Close()
		}
		asked := t.asked
		t.mu.Unlock()
		if asked {
			<-t.booted
		}
		err = errors.Join(err, t.m.Kill())
	}()
	var fwd []string
	for _, g := range append([]int{22}, guest...) {
		if f := fmt.Sprintf("%d->%d", t.ports[g], g); !slices.Contains(fwd, f) { // 22 may be in tcp_ports too
			fwd = append(fwd, f)
		}
	}
	o.Log(fmt.Sprintf("Booting %s on a throwaway overlay (%s, %s, %d CPU, %d MiB); 127.0.0.1 ports to the guest's: %s; console in %s",
		filepath.Base(o.Disk), filepath.Base(t.m.Args[0]), tg.Firmware, o.CPUs, o.Memory, strings.Join(fwd, ", "), o.ConsoleLog))

	if err := t.waitAll(ctx); err != nil {
		return nil, err
	}
	res = &Result{Accelerator: tg.Accel, Ports: t.ports, Checks: map[string]string{}, Waits: map[string]time.Duration{}}
	for _, w := range t.waits {
		res.Waits[w.name] = w.met
	}
	res.Booted = time.Since(t.start)
	if err := t.checks(ctx, res); err != nil {
		return nil, err
	}
	if err := t.inline(ctx); err != nil {
		return nil, err
	}
	return res, nil
}

// waitAll waits until every wait is met, at most o.BootTimeout from power
// on (and o.SettleTimeout once systemd says the boot finished), failing
// at once when the console shows the boot cannot succeed, QEMU exits, or
// the guest stalls before it answers.
func (t *run) waitAll(ctx context.Context) error {
	o := t.o
	bootCtx, cancel := context.WithTimeout(ctx, o.BootTimeout)
	defer cancel()

	var login *wait
	if o.LoginPrompt {
		login = &wait{name: "login prompt on the serial console"}
		t.waits = append(t.waits, login)
	}
	var sshWait *wait
	if o.SSH {
		sshWait = &wait{name: fmt.Sprintf("SSH as %s (guest port 22)", o.SSHUser)}
		t.waits = append(t.waits, sshWait)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, p := range o.TCPPorts {
		w := &wait{name: fmt.Sprintf("TCP port %d", p)}
		t.waits = append(t.waits, w)
		wg.Add(1)
		go func() { defer wg.Done(); t.waitTCP(bootCtx, w, p) }()
	}
	for _, h := range o.HTTP {
		p, _ := h.port()
		w := &wait{name: fmt.Sprintf("HTTP %s (guest port %d)", h.URL, p)}
		t.waits = append(t.waits, w)
		wg.Add(1)
		go func() { defer wg.Done(); t.waitHTTP(bootCtx, w, h, t.ports[p]) }()
	}
	// The watchdog stops once the guest answers over SSH or shows its
	// login prompt: an idle booted guest makes no progress to watch.
	watchCtx, stopWatch := context.WithCancel(bootCtx)
	defer stopWatch()
	watched := make(chan error, 1)
	go func() { watched <- t.m.Watch(watchCtx, qemu.WatchOptions{Stall: o.StallTimeout, TailLines: TailLines}) }()
	if sshWait != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if t.waitSSH(bootCtx, sshWait) {
				stopWatch()
				if t.img.systemd {
					t.mu.Lock()
					t.asked = true
					t.mu.Unlock()
					go t.systemState(t.sysCtx)
				}
			}
		}()
	}

	scan := newConsoleScanner(o.ConsoleLog)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var settle time.Time
	// A login wait says "met" itself.
	prog := progress{prompt: login != nil}
	for {
		if prompt, fatal := scan.scan(); fatal != "" {
			return t.fail("boot", "the console shows the boot cannot succeed: "+fatal)
		} else if prompt && login != nil {
			t.setWait(login, true, "")
			stopWatch()
		}
		for _, l := range prog.lines(time.Since(t.start), scan.seen, scan.last, t.unmet(false)) {
			o.Log(l)
		}
		unmet := t.unmet(true)
		if len(unmet) == 0 {
			return nil
		}
		select {
		case <-t.booted:
			if settle.IsZero() {
				settle = time.Now().Add(o.SettleTimeout)
			}
		default:
		}
		if !settle.IsZero() && time.Now().After(settle) {
			return t.fail("waiting for "+strings.Join(unmet, "; "),
				fmt.Sprintf("not met %s after systemd reported the boot finished (%s, %s after power-on; settle_timeout)",
					o.SettleTimeout, t.stateLine(), diskimage.FormatDuration(t.bootedAt)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-bootCtx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return t.fail("waiting for "+strings.Join(t.unmet(true), "; "), fmt.Sprintf("not met within boot_timeout (%s)", o.BootTimeout))
		case err := <-watched:
			if err != nil {
				var ge *qemu.GuestError
				if errors.As(err, &ge) {
					detail := ge.Detail
					if errors.Is(err, qemu.ErrStalled) {
						detail += " (boot_stall_timeout)"
					}
					if ge.Stderr != "" {
						detail += "; QEMU said: " + ge.Stderr
					}
					return t.fail("boot", fmt.Sprintf("%v: %s", ge.Err, detail))
				}
				return err
			}
			watched = nil
		case <-tick.C:
		}
	}
}

// stateLine is what systemd said of the boot.
func (t *run) stateLine() string {
	if t.stateErr != nil {
		return "systemctl is-system-running: " + t.stateErr.Error()
	}
	return "systemctl is-system-running: " + t.state
}

// systemState asks systemd, over SSH, to wait for the end of the boot
// (its job queue empty) and say how it went; then closes t.booted.
func (t *run) systemState(ctx context.Context) {
	t.mu.Lock()
	c := t.client
	t.mu.Unlock()
	out, _, _, err := command(ctx, c, "systemctl is-system-running --wait")
	state := strings.TrimSpace(out)
	failed := ""
	if err == nil && state != "running" {
		failed, _, _, _ = command(ctx, c, "systemctl --failed --plain --no-legend --no-pager")
	}
	t.mu.Lock()
	t.state, t.failed, t.stateErr = state, strings.TrimSpace(failed), err
	t.bootedAt = time.Since(t.start)
	t.mu.Unlock()
	if err == nil {
		t.o.Log(fmt.Sprintf("systemd: the boot finished %s after power-on: %s", diskimage.FormatDuration(t.bootedAt), state))
	}
	close(t.booted)
}
