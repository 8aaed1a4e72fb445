package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQEMU serves one QMP connection on a unix socket: it greets, then
// answers each command from answers (by command name), recording what it
// received. An answer of "" closes the connection (quit does that).
func fakeQEMU(t *testing.T, answers map[string][]string) (string, <-chan []string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []string, 1)
	go func() {
		defer l.Close()
		var seen []string
		defer func() { got <- seen }()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}` + "\r\n"))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var req struct {
				Execute   string          `json:"execute"`
				Arguments json.RawMessage `json:"arguments"`
			}
			if err := json.Unmarshal(line, &req); err != nil {
				c.Write([]byte(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}` + "\n"))
				continue
			}
			seen = append(seen, req.Execute)
			for _, a := range answers[req.Execute] {
				if a == "" {
					return
				}
				c.Write([]byte(a + "\r\n"))
			}
		}
	}()
	return sock, got
}

func TestQMP(t *testing.T) {
	ok := `{"return": {}}`
	sock, got := fakeQEMU(t, map[string][]string{
		"qmp_capabilities": {ok},
		// An event arrives before the answer: it is recorded, not taken as the answer.
		"system_powerdown": {`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}`, ok},
		"query-status":     {`{"return": {"status": "running", "singlestep": false, "running": true}}`},
		"device_del":       {`{"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`},
		"send-key":         {ok},
		"quit":             {""},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Powerdown(); err != nil {
		t.Errorf("Powerdown: %v", err)
	}
	if len(q.Events) != 1 || q.Events[0] != "POWERDOWN" {
		t.Errorf("events = %q, want [POWERDOWN]", q.Events)
	}
	if st, err := q.Status(); err != nil || st != "running" {
		t.Errorf("Status = %q, %v", st, err)
	}
	if _, err := q.Execute("device_del", map[string]string{"id": "x"}); err == nil || !strings.Contains(err.Error(), "DeviceNotFound") {
		t.Errorf("device_del error = %v, want the QMP error class", err)
	}
	if err := q.CtrlAltDelete(); err != nil {
		t.Errorf("CtrlAltDelete: %v", err)
	}
	if err := q.Quit(); err != nil {
		t.Errorf("Quit with the connection closed by the exit: %v", err)
	}
	want := []string{"qmp_capabilities", "system_powerdown", "query-status", "device_del", "send-key", "quit"}
	if s := <-got; strings.Join(s, " ") != strings.Join(want, " ") {
		t.Errorf("the fake received %q, want %q", s, want)
	}
}

func TestQMPRefusesNonQMP(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "not-qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			time.Sleep(time.Second)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := DialQMP(ctx, sock); err == nil || !strings.Contains(err.Error(), "not a QMP greeting") {
		t.Errorf("DialQMP to a non-QMP server = %v", err)
	}
}

func TestQMPDialTimesOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := DialQMP(ctx, filepath.Join(t.TempDir(), "never.sock")); err == nil {
		t.Error("DialQMP to a socket that never appears succeeded")
	}
}

// A client that connects while QEMU starts can get an event (RESUME, from
// vm_start) before the greeting: it is kept, not taken for a bad greeting.
func TestQMPEventBeforeGreeting(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"timestamp": {"seconds": 1796108560, "microseconds": 957757}, "event": "RESUME"}` + "\r\n"))
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}` + "\r\n"))
		bufio.NewReader(c).ReadBytes('\n')
		c.Write([]byte(`{"return": {}}` + "\r\n"))
		time.Sleep(time.Second)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, sock)
	if err != nil {
		t.Fatalf("DialQMP = %v", err)
	}
	defer q.Close()
	if strings.Join(q.Events, ",") != "RESUME" {
		t.Errorf("events = %v, want RESUME", q.Events)
	}
}
