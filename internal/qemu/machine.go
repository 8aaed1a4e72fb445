package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// Machine is a running QEMU.
type Machine struct {
	Opts Options
	Args []string // the command line, binary first

	cmd    *exec.Cmd
	handle cleanup.Handle
	j      *cleanup.Journal
	qmp    *QMP
	stderr limitedWriter // QEMU's standard error, readable while it runs
	done   chan struct{}
	err    error // QEMU's exit, valid once done is closed
}

// FreePort returns a TCP port on 127.0.0.1 that is free now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePort is FreePort; tests replace it.
var freePort = FreePort

// portPicks bounds how often Start picks a port for SSH (o.SSHPort 0).
const portPicks = 5

// errPortTaken: QEMU could not bind the SSH port it was given.
var errPortTaken = errors.New("the SSH port was taken")

// Start launches QEMU, records the process in the journal (its release
// kills it, and a later build reaps it if this one is killed), and
// connects to its QMP monitor. QEMU is not tied to ctx: stop it with
// Shutdown, Quit or the journal.
//
// With o.SSHPort 0, Start picks a free port on 127.0.0.1 (Opts.SSHPort of
// the Machine says which) and, when another process took it before QEMU
// bound it (QEMU: "Could not set up host forwarding rule"; several builds
// on one host pick ports at once), picks again, up to 5 times. That is
// seen only through QMP: give o.QMPSocket. A port given by the caller is
// used as given.
func Start(ctx context.Context, o Options, j *cleanup.Journal) (*Machine, error) {
	if o.SSHPort != 0 {
		return start(ctx, o, j)
	}
	var err error
	for range portPicks {
		if o.SSHPort, err = freePort(); err != nil {
			return nil, fmt.Errorf("qemu: finding a free port on 127.0.0.1: %w", err)
		}
		var m *Machine
		if m, err = start(ctx, o, j); !errors.Is(err, errPortTaken) {
			return m, err
		}
	}
	return nil, err
}

func start(ctx context.Context, o Options, j *cleanup.Journal) (*Machine, error) {
	if j == nil {
		return nil, errors.New("qemu: no cleanup journal")
	}
	args, err := Args(o)
	if err != nil {
		return nil, err
	}
	bin := o.Binary
	if bin == "" {
		bin = DefaultBinary(o.Arch)
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("qemu: %s not found (install qemu-system): %w", bin, err)
	}
	if o.QMPSocket != "" {
		os.Remove(o.QMPSocket)
	}
	if err := cleanup.CloseInheritedFDs(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	m := &Machine{Opts: o, Args: append([]string{path}, args...), j: j, done: make(chan struct{})}
	m.cmd = exec.Command(path, args...)
	m.stderr.n = 64 << 10
	m.cmd.Stderr = &m.stderr
	// Its own process group: a Ctrl-C on the terminal reaches Packer, which
	// cancels the build; QEMU must wait for the orderly stop, not die early.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: starting %s: %w", bin, err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.done)
	}()
	e, err := cleanup.ProcessEntry(o.Disk, m.cmd.Process.Pid)
	if err == nil {
		m.handle, err = j.Take(e)
	}
	if err != nil {
		m.cmd.Process.Kill()
		<-m.done
		return nil, fmt.Errorf("qemu: journaling process %d: %w", m.cmd.Process.Pid, err)
	}
	if o.QMPSocket != "" {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		// Stop waiting for the socket as soon as QEMU exits (bad arguments).
		go func() {
			select {
			case <-m.done:
				cancel()
			case <-dctx.Done():
			}
		}()
		m.qmp, err = DialQMP(dctx, o.QMPSocket)
		if err != nil {
			// QEMU closing the socket usually means it is exiting: its
			// own message says why.
			select {
			case <-m.done:
				err = fmt.Errorf("qemu exited at once (%v): %s", m.err, strings.TrimSpace(m.stderr.String()))
				if strings.Contains(m.stderr.String(), fmt.Sprintf("Could not set up host forwarding rule 'tcp:127.0.0.1:%d-:22'", o.SSHPort)) {
					err = fmt.Errorf("%w (port %d): %w", errPortTaken, o.SSHPort, err)
				}
			case <-time.After(3 * time.Second):
			}
			return nil, errors.Join(err, m.Kill())
		}
	}
	return m, nil
}

// Pid is QEMU's process id.
func (m *Machine) Pid() int { return m.cmd.Process.Pid }

// Done is closed when QEMU has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Exited reports whether QEMU has exited, and how.
func (m *Machine) Exited() (bool, error) {
	select {
	case <-m.done:
		return true, m.err
	default:
		return false, nil
	}
}

// Stderr is what QEMU wrote on its standard error (the first 64 KiB).
func (m *Machine) Stderr() string { return m.stderr.String() }

// Powerdown presses the ACPI power button through QMP.
func (m *Machine) Powerdown() error {
	if m.qmp == nil {
		return errors.New("qemu: no QMP monitor")
	}
	return m.qmp.Powerdown()
}

// CtrlAltDelete sends ctrl-alt-delete through QMP.
func (m *Machine) CtrlAltDelete() error {
	if m.qmp == nil {
		return errors.New("qemu: no QMP monitor")
	}
	return m.qmp.CtrlAltDelete()
}

// HMP runs a human monitor command through QMP (human-monitor-command)
// and returns its text ("info usernet": user-mode networking's sockets).
func (m *Machine) HMP(cmd string) (string, error) {
	if m.qmp == nil {
		return "", errors.New("qemu: no QMP monitor")
	}
	raw, err := m.qmp.Execute("human-monitor-command", map[string]string{"command-line": cmd})
	if err != nil {
		return "", err
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		return "", fmt.Errorf("qmp human-monitor-command: %w", err)
	}
	return out, nil
}

// Wait waits for QEMU to exit, at most until ctx ends.
func (m *Machine) Wait(ctx context.Context) error {
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Quit asks QEMU through QMP to exit now, waits up to 10 s, then kills it;
// in every case the journal entry is released. Safe to call more than once.
func (m *Machine) Quit() error {
	if exited, _ := m.Exited(); !exited && m.qmp != nil {
		m.qmp.Quit()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m.Wait(ctx)
		cancel()
	}
	return m.Kill()
}

// Kill ends QEMU (SIGTERM, then SIGKILL) through its journal entry and
// waits for the exit. Safe to call more than once.
func (m *Machine) Kill() error {
	if m.qmp != nil {
		m.qmp.Close()
		m.qmp = nil
	}
	var err error
	if m.handle != 0 {
		err = m.j.Release(m.handle)
		if err == nil {
			m.handle = 0
		}
	}
	if err == nil {
		<-m.done
	}
	if m.Opts.QMPSocket != "" {
		os.Remove(m.Opts.QMPSocket)
	}
	return err
}

// limitedWriter keeps the first n bytes written to it and drops the rest;
// it may be read while written to.
type limitedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 {
		q := p
		if len(q) > l.n {
			q = q[:l.n]
		}
		l.b.Write(q)
		l.n -= len(q)
	}
	return len(p), nil
}

func (l *limitedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// terminalEscape matches the escape sequences boot loaders and kernels
// write to a serial console (ECMA-48: CSI such as GRUB's clear screen
// "ESC[H ESC[J", and the short ESC sequences such as "ESC c" or "ESC(B").
var terminalEscape = regexp.MustCompile(`\x1b(\[[0-?]*[ -/]*[@-~]|[ -/]*[0-Z\\-~])`)

// CleanConsole is serial console output as text: terminal escape
// sequences and control characters other than newline and tab removed.
func CleanConsole(b []byte) string {
	b = terminalEscape.ReplaceAll(b, nil)
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || r >= 0x20 && r != 0x7f {
			return r
		}
		return -1
	}, string(b))
}

// Tail returns the last n lines of a text file (the serial console), with
// terminal escape sequences and control characters other than newline and
// tab removed.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := CleanConsole(b)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
