package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// QMP is a client of QEMU's machine protocol on a unix socket: JSON
// objects, one a line; a greeting, then qmp_capabilities, then commands
// answered by "return" or "error", with asynchronous "event"s between.
type QMP struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
	// Events seen while waiting for answers, in order ("SHUTDOWN", ...).
	Events []string
}

// DialQMP connects to the socket, retrying until ctx ends (QEMU creates it
// shortly after starting), and negotiates capabilities.
func DialQMP(ctx context.Context, socket string) (*QMP, error) {
	var conn net.Conn
	for {
		var err error
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", socket)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: connecting to %s: %w", socket, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
	q := &QMP{conn: conn, r: bufio.NewReader(conn)}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	defer conn.SetDeadline(time.Time{})
	// An event may come first: a client that connects while QEMU starts
	// can be sent one before the greeting (seen with QEMU 7.2).
	for {
		var greeting struct {
			QMP   *json.RawMessage `json:"QMP"`
			Event string           `json:"event"`
		}
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("qmp: reading the greeting: %w", err)
		}
		if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil && greeting.Event == "" {
			conn.Close()
			return nil, fmt.Errorf("qmp: not a QMP greeting: %.200q", line)
		}
		if greeting.QMP != nil {
			break
		}
		q.Events = append(q.Events, greeting.Event)
	}
	if _, err := q.execute("qmp_capabilities", nil, 10*time.Second); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(cmd string, args any) (json.RawMessage, error) {
	return q.execute(cmd, args, 10*time.Second)
}

func (q *QMP) execute(cmd string, args any, timeout time.Duration) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	q.conn.SetDeadline(time.Now().Add(timeout))
	defer q.conn.SetDeadline(time.Time{})
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: reading the answer: %w", cmd, err)
		}
		var resp struct {
			Return *json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: bad answer %.200q: %w", cmd, line, err)
		}
		switch {
		case resp.Event != "":
			q.Events = append(q.Events, resp.Event)
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, resp.Error.Class, resp.Error.Desc)
		case resp.Return != nil:
			return *resp.Return, nil
		}
	}
}

// Powerdown presses the ACPI power button: the guest shuts down cleanly if
// it listens (systemd-logind or acpid does).
func (q *QMP) Powerdown() error {
	_, err := q.Execute("system_powerdown", nil)
	return err
}

// CtrlAltDelete sends the key chord: the guest kernel hands it to init
// (systemd starts reboot.target, a clean shutdown), which works where no
// daemon listens to the ACPI power button (no logind without D-Bus).
// QEMU runs with -no-reboot, so the guest's reboot ends it.
func (q *QMP) CtrlAltDelete() error {
	keys := []map[string]string{{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}}
	_, err := q.Execute("send-key", map[string]any{"keys": keys})
	return err
}

// Quit ends QEMU at once (after flushing its disk caches to the file). The
// connection may close before the answer arrives: that counts as done.
func (q *QMP) Quit() error {
	_, err := q.Execute("quit", nil)
	for _, closed := range []error{io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, syscall.ECONNRESET, syscall.EPIPE} {
		if errors.Is(err, closed) {
			return nil
		}
	}
	return err
}

// Status is the "status" of query-status ("running", "shutdown", ...).
func (q *QMP) Status() (string, error) {
	raw, err := q.Execute("query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return st.Status, nil
}

// Close closes the connection; QEMU keeps running.
func (q *QMP) Close() error { return q.conn.Close() }
