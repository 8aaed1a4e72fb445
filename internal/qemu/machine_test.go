package qemu

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(DefaultBinary("")); err != nil {
		t.Skipf("needs %s: %v", DefaultBinary(""), err)
	}
}

// A real QEMU on a blank disk (SeaBIOS finds nothing to boot and waits):
// it answers QMP, Quit ends it and releases its journal entry, and a
// second Quit is harmless. A Machine left running is ended by the
// journal's teardown.
func TestMachineStartQuit(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "blank.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	j, err := cleanup.Open(filepath.Join(dir, "state"), "machine test")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Disk: disk, SSHPort: port, QMPSocket: filepath.Join(dir, "qmp.sock"), ConsoleLog: filepath.Join(dir, "console.log"), MemoryMiB: 128}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, o, j)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := m.qmp.Status(); err != nil || st != "running" {
		t.Errorf("status = %q, %v", st, err)
	}
	if exited, _ := m.Exited(); exited {
		t.Fatal("QEMU exited at once")
	}

	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}
	if exited, _ := m.Exited(); !exited {
		t.Error("QEMU still runs after Quit")
	}
	if err := m.Quit(); err != nil {
		t.Errorf("second Quit: %v", err)
	}
	if _, err := os.Stat(o.QMPSocket); err == nil {
		t.Error("QMP socket left")
	}

	// Left running: the journal's Close ends it.
	m2, err := Start(ctx, o, j)
	if err != nil {
		t.Fatal(err)
	}
	pid2 := m2.Pid()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m2.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("QEMU %d still runs after the journal's teardown", pid2)
		unix.Kill(pid2, unix.SIGKILL)
	}

}

// Bad QEMU arguments: Start fails with QEMU's own message, nothing runs.
func TestMachineStartFails(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	j, err := cleanup.Open(filepath.Join(dir, "state"), "machine test")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	o := Options{Disk: filepath.Join(dir, "missing.raw"), SSHPort: 2, QMPSocket: filepath.Join(dir, "qmp.sock")}
	_, err = Start(context.Background(), o, j)
	if err == nil || !strings.Contains(err.Error(), "missing.raw") {
		t.Errorf("Start with a missing disk = %v, want QEMU's error naming it", err)
	}
}

// Tail keeps the last lines of a console file as text: terminal escape
// sequences (GRUB clears the screen) and other control characters go.
func TestTail(t *testing.T) {
	for _, tc := range []struct {
		name, console string
		n             int
		want          string
	}{
		{"last lines", "a\nb\nc\nd\n", 2, "c\nd"},
		{"fewer lines than asked", "a\nb", 5, "a\nb"},
		{"GRUB's clear screen", "\x1b[H\x1b[J\x1b[1;1HIMAGEFACTORY-STALL-MARKER\n", 5, "IMAGEFACTORY-STALL-MARKER"},
		{"colours and short escapes", "\x1b[0;32mOK\x1b[0m\r\n\x1bcre\x1b(Bset\x1b7\n", 5, "OK\nreset"},
		{"control characters", "a\x00\x07b\tc\x7f\n", 5, "ab\tc"},
		{"empty", "", 5, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "console.log")
			if err := os.WriteFile(p, []byte(tc.console), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := Tail(p, tc.n); got != tc.want {
				t.Errorf("Tail = %q, want %q", got, tc.want)
			}
		})
	}
	if got := Tail(filepath.Join(t.TempDir(), "missing"), 5); got != "" {
		t.Errorf("Tail of a missing file = %q", got)
	}
}

// Several builds on one host each pick a free port and hand it to QEMU:
// between the pick and QEMU's bind another build (or a loopback SSH
// connection's source port) may take it, and QEMU exits with "Could not
// set up host forwarding rule". With SSHPort 0, Start picks the port
// itself and picks again when that happens.
func TestMachineStartPortTaken(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "blank.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	picks := 0
	freePort = func() (int, error) { // the first pick loses the race
		picks++
		if picks == 1 {
			return takenPort, nil
		}
		return FreePort()
	}
	defer func() { freePort = FreePort }()
	j, err := cleanup.Open(filepath.Join(dir, "state"), "port test")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	o := Options{Disk: disk, QMPSocket: filepath.Join(dir, "qmp.sock"), ConsoleLog: filepath.Join(dir, "console.log"), MemoryMiB: 128}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, o, j)
	if err != nil {
		t.Fatalf("Start with a port taken between the pick and QEMU's bind: %v", err)
	}
	defer m.Quit()
	if picks != 2 || m.Opts.SSHPort == takenPort || m.Opts.SSHPort == 0 {
		t.Errorf("picks %d, SSH port %d (taken: %d): want a second pick", picks, m.Opts.SSHPort, takenPort)
	}
	if !strings.Contains(strings.Join(m.Args, " "), fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-:22", m.Opts.SSHPort)) {
		t.Errorf("QEMU's command line does not forward port %d: %v", m.Opts.SSHPort, m.Args)
	}

	// A port given by the caller is used as given: taken, it fails, and
	// says which port.
	o.SSHPort = takenPort
	if m2, err := Start(ctx, o, j); err == nil {
		m2.Quit()
		t.Error("Start on a taken port given by the caller succeeded")
	} else if !strings.Contains(err.Error(), fmt.Sprint(takenPort)) {
		t.Errorf("error does not name port %d: %v", takenPort, err)
	}
}
