package boottest

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The boot's progress lines, golden: the kernel's first line and the
// login prompt once each, a heartbeat every 15 s in between naming what
// is awaited and the console's last line, none once nothing is awaited
// (the example's boot test was silent for 75 s under TCG).
func TestProgressLines(t *testing.T) {
	ssh := []string{"SSH as root (guest port 22)"}
	type call struct {
		at    time.Duration
		seen  []string
		last  string
		unmet []string
		want  []string
	}
	for _, tt := range []struct {
		name  string
		calls []call
	}{
		{"a Debian boot under TCG", []call{
			{1 * time.Second, []string{"SeaBIOS (version 1.16.2-debian-1.16.2-1)"}, "SeaBIOS (version 1.16.2-debian-1.16.2-1)", ssh, nil},
			{14 * time.Second, nil, "Booting from Hard Disk...", ssh, nil},
			{15 * time.Second, nil, "Booting from Hard Disk...", ssh, []string{
				"Still booting, 15.0s after power-on: waiting for SSH as root (guest port 22); console: Booting from Hard Disk..."}},
			{17 * time.Second, []string{"[    0.000000] Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) (gcc-12)", "[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz"}, "[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz", ssh, []string{
				"The kernel started 17.0s after power-on (Linux 6.1.0-28-amd64)"}},
			{31 * time.Second, nil, "[   9.1] systemd[1]: Started ssh.service", ssh, nil},
			{32 * time.Second, nil, "[   9.1] systemd[1]: Started ssh.service", ssh, []string{
				"Still booting, 32.0s after power-on: waiting for SSH as root (guest port 22); console: [ 9.1] systemd[1]: Started ssh.service"}},
			{40 * time.Second, []string{"", "Debian GNU/Linux 12 localhost ttyS0", "", "localhost login: "}, "localhost login: ", ssh, []string{
				"Login prompt on the serial console 40.0s after power-on"}},
			{41 * time.Second, []string{"localhost login: "}, "localhost login: ", ssh, nil},
			{70 * time.Second, nil, "localhost login: ", nil, nil},
		}},
		{"a silent console", []call{
			{16 * time.Second, nil, "", []string{"TCP port 80", "HTTP http://localhost/ (guest port 80)"}, []string{
				"Still booting, 16.0s after power-on: waiting for TCP port 80; HTTP http://localhost/ (guest port 80); nothing on the console yet"}},
		}},
		{"GRUB's padded menu line", []call{
			{15 * time.Second, nil, "before booting or `c' for a command-line.          *Debian GNU/Linux   ", ssh, []string{
				"Still booting, 15.0s after power-on: waiting for SSH as root (guest port 22); console: before booting or `c' for a command-line. *Debian GNU/Linux"}},
		}},
		{"a long console line", []call{
			{15 * time.Second, nil, strings.Repeat("é", 120), ssh, []string{
				"Still booting, 15.0s after power-on: waiting for SSH as root (guest port 22); console: " + strings.Repeat("é", 60) + "..."}},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var p progress
			for _, c := range tt.calls {
				if got := p.lines(c.at, c.seen, c.last, c.unmet); !reflect.DeepEqual(got, c.want) {
					t.Errorf("at %s: %q, want %q", c.at, got, c.want)
				}
			}
		})
	}
}

// The scanner keeps the lines of its last read and the last line that is
// not blank, for the progress lines.
func TestConsoleScannerLast(t *testing.T) {
	path := t.TempDir() + "/console.log"
	s := newConsoleScanner(path)
	for _, tc := range []struct{ write, last string }{
		{"SeaBIOS\r\nBooting from Hard Disk...\r\n", "Booting from Hard Disk..."},
		{"\r\n\r\n", "Booting from Hard Disk..."},
		{"\x1b[H\x1b[J[    0.000000] Linux version 6.1.0-28-amd64 (x)\r\n", "[    0.000000] Linux version 6.1.0-28-amd64 (x)"},
	} {
		appendFile(t, path, tc.write)
		s.scan()
		if s.last != tc.last {
			t.Errorf("after %q: last %q, want %q", tc.write, s.last, tc.last)
		}
	}
	if s.scan(); s.seen != nil {
		t.Errorf("nothing new, yet seen %q", s.seen)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
