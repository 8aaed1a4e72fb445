package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/chrootprep"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
)

// chrootPath is the PATH commands in the chroot get: the image's, not the
// host's.
const chrootPath = chrootprep.Path

// Communicator runs provisioners' commands in a chroot of the mounted image
// and moves files in and out of it. Files are resolved inside the image
// root, so a symlink in the image never sends an upload or a download to a
// host file.
type Communicator struct {
	Root    *inroot.Root
	Wrapper common.CommandWrapper
	// Env is the whole environment of chroot commands: the host's is not
	// passed through (it may hold secrets and host paths).
	Env []string
	// Sandbox gives the namespaces every command runs in (the session's,
	// started on first use). nil: plain `chroot ROOT`, for tests of what
	// runs inside only.
	Sandbox func() (*sandbox.Sandbox, error)
}

var _ packersdk.Communicator = (*Communicator)(nil)

// chrootEnv builds the environment of chroot commands from the user's.
func chrootEnv(user map[string]string) []string {
	env := []string{
		"PATH=" + chrootPath,
		"HOME=/root",
		"LANG=C.UTF-8",
		"DEBIAN_FRONTEND=noninteractive",
		"TERM=dumb",
		// systemctl acts offline (start, stop, restart ignored; enable
		// makes links) even where its chroot test fails: it reads
		// /proc/1/root, unreadable in many containers (systemctl(1)).
		"SYSTEMD_OFFLINE=1",
	}
	for k, v := range user {
		env = append(env, k+"="+v)
	}
	return env
}

// closeInherited marks every descriptor of this process close-on-exec.
// Go opens its own files close-on-exec, but not what Packer (and whatever
// started Packer) passed down, nor what a library opened without the flag
// later on; those would reach the chroot's commands, and a host descriptor
// in an untrusted image is a way out of the chroot (and a daemon holding
// Packer's output pipe keeps Packer waiting). It runs before every command,
// not once: a descriptor opened after the first command leaks just as well.
func closeInherited() error {
	return unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
}

// Start runs cmd in the chroot: `nsenter ... -- /bin/sh -c CMD` into the
// sandbox's namespaces and root (Sandbox), through command_wrapper. The
// command gets its own process group, so a cancelled build (Ctrl-C) stops
// it and everything it started.
func (c *Communicator) Start(ctx context.Context, rc *packersdk.RemoteCmd) error {
	inner := fmt.Sprintf("chroot %s %s -c %s", shellQuote(c.Root.Path()), chrootShell, shellQuote(rc.Command))
	var box *sandbox.Sandbox
	if c.Sandbox != nil {
		var err error
		box, err = c.Sandbox()
		if err != nil {
			return fmt.Errorf("the chroot's sandbox: %w", err)
		}
		argv := box.EnterArgs(chrootShell, "-c", rc.Command)
		for i := range argv {
			argv[i] = shellQuote(argv[i])
		}
		inner = strings.Join(argv, " ")
	}
	command, err := c.Wrapper(inner)
	if err != nil {
		return fmt.Errorf("command_wrapper: %w", err)
	}
	if err := closeInherited(); err != nil {
		return fmt.Errorf("closing inherited descriptors before running in the chroot: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env = c.Env // its PATH also finds nsenter(1), chroot(8) and sudo on the host
	cmd.Stdin = rc.Stdin
	cmd.Stdout = rc.Stdout
	cmd.Stderr = rc.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if box != nil {
		// In the sandbox's device cgroup from the start: the shell,
		// command_wrapper, nsenter and the command.
		box.ProcAttr(cmd.SysProcAttr)
	}
	// A daemon started without redirecting its output holds the pipes
	// after the command has ended; Packer would wait for them (for ever,
	// as packer-plugin-amazon's chroot does). The command's end is its
	// shell's exit: the pipes are closed outputWait after it.
	cmd.WaitDelay = outputWait
	log.Printf("chroot %s: %s", c.Root.Path(), rc.Command)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting a command in the chroot: %w", err)
	}

	waited := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			select {
			case <-waited:
				// Both were ready: the group is gone and its ID may be
				// reused; signal nothing.
			default:
				stopGroup(cmd.Process.Pid, waited)
			}
		case <-waited:
		}
	}()
	go func() {
		err := cmd.Wait()
		close(waited)
		if errors.Is(err, exec.ErrWaitDelay) {
			err = nil // the shell exited 0; only the pipes were still held
			if rc.Stderr != nil {
				fmt.Fprintf(rc.Stderr, "Warning: a process the command started still holds its output %v after the command ended; "+
					"what it prints from now on is not shown. It is stopped when provisioning ends; start daemons with their output redirected "+
					"(cmd >/dev/null 2>&1 &).\n", outputWait)
			}
		}
		status := 0
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			status = exitErr.ExitCode()
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				status = 128 + int(ws.Signal())
			}
		} else if err != nil {
			status = packersdk.CmdDisconnect
		}
		log.Printf("chroot command exited with %d: %s", status, rc.Command)
		rc.SetExited(status)
	}()
	return nil
}

// outputWait is how long a chroot command's output pipes are read after
// its shell exited (exec.Cmd's WaitDelay): enough for what its last
// processes still flush, short beside a build.
const outputWait = 3 * time.Second

// stopGroup asks a process group to end, then forces it. The shell's
// exit (waited) does not end the group: a process that ignores SIGTERM
// stays in it, and keeps the group's ID from being reused (kill(2) with
// signal 0 says whether any member is left).
func stopGroup(pgid int, waited <-chan struct{}) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	grace := time.After(3 * time.Second)
	select {
	case <-waited:
		if syscall.Kill(-pgid, 0) != nil {
			return
		}
		<-grace
	case <-grace:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// Upload writes r to dst in the image.
func (c *Communicator) Upload(dst string, r io.Reader, fi *os.FileInfo) error {
	perm := os.FileMode(0o644)
	if fi != nil && *fi != nil {
		perm = (*fi).Mode().Perm()
	}
	f, err := c.Root.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("upload to %s in the image: %w", dst, err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("upload to %s in the image: %w", dst, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// UploadDir copies the host directory src into dst in the image, with the
// usual rsync-like rule: "src/" copies its contents, "src" the directory.
func (c *Communicator) UploadDir(dst string, src string, exclude []string) error {
	target := dst
	if !strings.HasSuffix(src, "/") {
		target = path.Join(dst, filepath.Base(src))
	}
	if err := c.Root.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("upload of %s to %s in the image: %w", src, dst, err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if excluded(e.Name(), exclude) {
			continue
		}
		if err := c.uploadEntry(filepath.Join(src, e.Name()), path.Join(target, e.Name())); err != nil {
			return fmt.Errorf("upload of %s to %s in the image: %w", src, dst, err)
		}
	}
	return nil
}

// uploadEntry copies one entry of a directory being uploaded. A symlink is
// copied as a link, as CopyIn does deeper in the tree; CopyIn itself would
// follow it, and a link to a host file (a key, /etc/shadow) would put that
// file's content in the image.
func (c *Communicator) uploadEntry(host, name string) error {
	fi, err := os.Lstat(host)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		return c.Root.CopyIn(host, name)
	}
	target, err := os.Readlink(host)
	if err != nil {
		return err
	}
	if old, err := c.Root.Lstat(name); err == nil {
		if old.IsDir() {
			return fmt.Errorf("%s in the image is a directory; cannot replace it with the link %s", name, host)
		}
		if err := c.Root.Remove(name); err != nil {
			return err
		}
	}
	return c.Root.Symlink(target, name)
}

// Download copies src from the image to w.
func (c *Communicator) Download(src string, w io.Writer) error {
	f, err := c.Root.OpenFile(src, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("download of %s from the image: %w", src, err)
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// DownloadDir copies the image directory src to the host directory dst.
// Symlinks in the image are recreated as symlinks, never followed. Names
// in src matching an exclude pattern are left out (as UploadDir does).
func (c *Communicator) DownloadDir(src string, dst string, exclude []string) error {
	if len(exclude) == 0 {
		if err := c.Root.CopyOut(src, dst); err != nil {
			return fmt.Errorf("download of %s from the image: %w", src, err)
		}
		return nil
	}
	// Resolve src once, inside the root, and list it through that.
	real, err := c.Root.RealPath(src)
	if err != nil {
		return fmt.Errorf("download of %s from the image: %w", src, err)
	}
	d, err := c.Root.Open(real)
	if err != nil {
		return fmt.Errorf("download of %s from the image: %w", src, err)
	}
	names, err := d.Readdirnames(-1)
	fi, serr := d.Stat()
	d.Close()
	if err != nil {
		return fmt.Errorf("download of %s from the image: %w", src, err)
	}
	if serr != nil {
		return fmt.Errorf("download of %s from the image: %w", src, serr)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("download of %s from the image: %w", src, err)
	}
	for _, n := range names {
		if excluded(n, exclude) {
			continue
		}
		if err := c.downloadEntry(path.Join(real, n), filepath.Join(dst, n)); err != nil {
			return fmt.Errorf("download of %s from the image: %w", src, err)
		}
	}
	if err := os.Chmod(dst, fi.Mode().Perm()); err != nil {
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}

// downloadEntry copies one entry of a directory being downloaded. A
// symlink is recreated as one, as CopyOut does inside a tree: CopyOut
// itself would follow it, since it resolves the name it is given.
func (c *Communicator) downloadEntry(name, dst string) error {
	fi, err := c.Root.Lstat(name)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		return c.Root.CopyOut(name, dst)
	}
	target, err := c.Root.Readlink(name)
	if err != nil {
		return err
	}
	if old, err := os.Lstat(dst); err == nil {
		if old.IsDir() {
			return fmt.Errorf("%s is a directory", dst)
		}
		if err := os.Remove(dst); err != nil {
			return err
		}
	}
	return os.Symlink(target, dst)
}

func excluded(name string, patterns []string) bool {
	for _, p := range patterns {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
