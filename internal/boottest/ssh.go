package boottest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshAddr is the forwarded SSH port.
func (t *run) sshAddr() string { return fmt.Sprintf("127.0.0.1:%d", t.sshPort) }

// waitSSH retries a login with the run's key until it works or ctx ends;
// the client is kept for the checks and the inline commands.
func (t *run) waitSSH(ctx context.Context, w *wait) bool {
	signer, err := ssh.ParsePrivateKey(t.key.Private)
	if err != nil {
		t.setWait(w, false, err.Error())
		return false
	}
	cfg := &ssh.ClientConfig{
		User: t.o.SSHUser,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		// A guest of this run: its keys are new by design (and checked).
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	}
	for {
		c, err := dialSSH(ctx, t.sshAddr(), cfg)
		if err == nil {
			t.mu.Lock()
			t.client = c
			t.mu.Unlock()
			t.setWait(w, true, "")
			return true
		}
		t.setWait(w, false, err.Error())
		select {
		case <-ctx.Done():
			return false
		case <-time.After(2 * time.Second):
		}
	}
}

// dialSSH connects and shakes hands within 30 s. QEMU's user networking
// accepts on the forwarded port before the guest answers, so a connection
// proves nothing until the handshake.
func dialSSH(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	// The handshake knows no context: a cancel closes the connection.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// command runs cmd over SSH and returns its output and exit status; err is
// set when it could not run or did not end (ctx), not for a non-zero exit.
func command(ctx context.Context, c *ssh.Client, cmd string) (stdout, stderr string, status int, err error) {
	var out, errOut bytes.Buffer
	status, err = stream(ctx, c, cmd, &out, &errOut)
	return out.String(), errOut.String(), status, err
}

// stream runs cmd over SSH with its output going to stdout and stderr.
func stream(ctx context.Context, c *ssh.Client, cmd string, stdout, stderr io.Writer) (int, error) {
	if c == nil {
		return 0, errors.New("no SSH connection")
	}
	s, err := c.NewSession()
	if err != nil {
		return 0, err
	}
	defer s.Close()
	s.Stdout, s.Stderr = stdout, stderr
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case <-ctx.Done():
		s.Close()
		return 0, ctx.Err()
	case err := <-done:
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			return ee.ExitStatus(), nil
		}
		return 0, err
	}
}

// keyAlgorithms are the host key algorithms a keyscan asks for, one
// handshake each (as ssh-keyscan -t does): a server offers one key per
// handshake, of the first algorithm both sides have.
var keyAlgorithms = []string{
	ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoDSA, //nolint:staticcheck // an old image's DSA key counts too
}

var errScanned = errors.New("host key read")

// keyscan returns the host keys the server at addr offers, by their
// marshalled form.
func keyscan(ctx context.Context, addr string) (map[string]ssh.PublicKey, error) {
	keys := map[string]ssh.PublicKey{}
	var lastErr error
	for _, alg := range keyAlgorithms {
		var got ssh.PublicKey
		cfg := &ssh.ClientConfig{
			User:              "keyscan",
			HostKeyAlgorithms: []string{alg},
			HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
				got = k
				return errScanned
			},
		}
		c, err := dialSSH(ctx, addr, cfg)
		if c != nil {
			c.Close()
		}
		if got != nil {
			keys[string(got.Marshal())] = got
		} else if err != nil && !strings.Contains(err.Error(), "no common algorithm") {
			lastErr = err
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the guest's sshd offered no host key: %v", lastErr)
	}
	return keys, nil
}
