package boottest

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// machineID is systemd's machine-id(5): 32 lower-case hex characters.
var machineID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// checks runs the built-in checks over SSH. Every check runs; the failure
// names each that failed.
func (t *run) checks(ctx context.Context, res *Result) error {
	var names, failed []string
	for _, name := range t.o.Checks {
		found, err := t.check(ctx, name)
		if err != nil {
			t.o.Log(fmt.Sprintf("check %s: FAILED: %s", name, err))
			names = append(names, name)
			failed = append(failed, fmt.Sprintf("%s: %s", name, err))
			continue
		}
		res.Checks[name] = found
		t.o.Log(fmt.Sprintf("check %s: ok: %s", name, found))
	}
	if len(failed) == 0 {
		return nil
	}
	return t.fail("check "+strings.Join(names, ", "), "failed after the boot:\n  "+strings.Join(failed, "\n  "))
}

// check runs one check and says what it found, or why it failed.
func (t *run) check(ctx context.Context, name string) (string, error) {
	t.mu.Lock()
	c := t.client
	t.mu.Unlock()
	switch name {
	case CheckHostKeys:
		return t.checkHostKeys(ctx)
	case CheckMachineID:
		out, _, status, err := command(ctx, c, "cat /etc/machine-id")
		if err != nil || status != 0 {
			return "", fmt.Errorf("reading /etc/machine-id over SSH: exit status %d %v", status, err)
		}
		id := strings.TrimSpace(out)
		if !machineID.MatchString(id) {
			return "", fmt.Errorf("/etc/machine-id holds %q, not a 32-hex ID", id)
		}
		if id == t.img.machineID {
			return "", fmt.Errorf("/etc/machine-id is %s, the image's own: every clone of it shares the ID (scrub's machine-id operation makes it \"uninitialized\")", id)
		}
		was := t.img.machineID
		if was == "" {
			was = "none"
		}
		return fmt.Sprintf("%s (the image held %q)", id, was), nil
	case CheckHostname:
		out, _, status, err := command(ctx, c, "cat /proc/sys/kernel/hostname")
		if err != nil || status != 0 {
			return "", fmt.Errorf("reading the hostname over SSH: exit status %d %v", status, err)
		}
		got := strings.TrimSpace(out)
		for _, f := range factoryHostnames(t.o.FactoryHostnames) {
			if strings.EqualFold(shortName(got), shortName(f)) {
				return "", fmt.Errorf("the guest's hostname %q is the factory's (%s): scrub's hostname operation sets a neutral one", got, f)
			}
		}
		return got, nil
	case CheckSystemRunning:
		if !t.img.systemd {
			return "skipped: the image has no systemd", nil
		}
		select {
		case <-t.booted:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		t.mu.Lock()
		state, failed, err := t.state, t.failed, t.stateErr
		t.mu.Unlock()
		if err != nil {
			return "", fmt.Errorf("systemctl is-system-running --wait: %v", err)
		}
		units := ""
		if failed != "" {
			units = "; failed units:\n    " + strings.ReplaceAll(failed, "\n", "\n    ")
		}
		switch {
		case state == "running":
			return state, nil
		case state == "degraded" && t.o.AllowDegraded:
			return state + " (allow_degraded)" + units, nil
		}
		return "", fmt.Errorf("systemctl is-system-running --wait says %q, not running%s", state, units)
	}
	return "", fmt.Errorf("no check %q", name)
}

// checkHostKeys compares the keys the guest's sshd offers with the ones
// the image held before the boot.
func (t *run) checkHostKeys(ctx context.Context) (string, error) {
	keys, err := keyscan(ctx, t.sshAddr())
	if err != nil {
		return "", err
	}
	var same, seen []string
	for k, pub := range keys {
		fp := pub.Type() + " " + ssh.FingerprintSHA256(pub)
		seen = append(seen, fp)
		if file, ok := t.img.hostKeys[k]; ok {
			same = append(same, fp+" ("+file+")")
		}
	}
	sort.Strings(seen)
	sort.Strings(same)
	if len(same) > 0 {
		return "", fmt.Errorf("the guest's sshd offers host keys the image held before the boot (or the factory's), shared by every clone of it: %s; "+
			"they were not regenerated (scrub's ssh-hostkeys operation removes them and makes new ones at first boot)", strings.Join(same, ", "))
	}
	held := fmt.Sprintf("none of the %d known from before the boot", len(t.img.hostKeys))
	if len(t.img.hostKeys) == 0 {
		held = "the image held none"
	}
	return fmt.Sprintf("%d offered, %s: %s", len(seen), held, strings.Join(seen, ", ")), nil
}

// factoryHostnames is this host's name and the extra ones.
func factoryHostnames(extra []string) []string {
	out := append([]string(nil), extra...)
	if h, err := os.Hostname(); err == nil && h != "" {
		out = append(out, h)
	}
	return out
}

func shortName(h string) string { return strings.SplitN(h, ".", 2)[0] }

// inline runs the inline commands over SSH, each through the user's
// shell, their output shown line by line; each must exit 0.
func (t *run) inline(ctx context.Context) error {
	t.mu.Lock()
	c := t.client
	t.mu.Unlock()
	for i, cmd := range t.o.Inline {
		t.o.Log(fmt.Sprintf("inline[%d]: %s", i, cmd))
		w := newLineWriter(func(l string) { t.o.Log("    " + l) })
		status, err := stream(ctx, c, cmd, w, w)
		w.Flush()
		if err != nil {
			return t.fail(fmt.Sprintf("inline[%d] %q", i, cmd), "could not run over SSH: "+err.Error())
		}
		if status != 0 {
			return t.fail(fmt.Sprintf("inline[%d] %q", i, cmd), fmt.Sprintf("exited with status %d", status))
		}
	}
	return nil
}

// lineWriter calls f for every complete line written to it.
type lineWriter struct {
	mu  sync.Mutex
	f   func(string)
	buf []byte
}

func newLineWriter(f func(string)) *lineWriter { return &lineWriter{f: f} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		w.f(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
}

// Flush passes on a last line without a newline.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.f(string(w.buf))
		w.buf = nil
	}
}

var _ io.Writer = (*lineWriter)(nil)
