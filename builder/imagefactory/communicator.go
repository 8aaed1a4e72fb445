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
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// chrootPath is the PATH commands in the chroot get: the image's, not the
// host's.
const chrootPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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
	}
	for k, v := range user {
		env = append(env, k+"="+v)
	}
	return env
}

// closeInherited marks every descriptor this process inherited close-on-exec.
// Go opens its own files close-on-exec, but not what Packer (and whatever
// started Packer) passed down; those would reach the chroot's commands, and
// a host descriptor in an untrusted image is a way out of the chroot (and a
// daemon holding Packer's output pipe keeps Packer waiting).
var closeInherited = sync.OnceValue(func() error {
	return unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
})

// Start runs cmd in the chroot. The command gets its own process group, so
// a cancelled build (Ctrl-C) stops it and everything it started.
func (c *Communicator) Start(ctx context.Context, rc *packersdk.RemoteCmd) error {
	command, err := c.Wrapper(fmt.Sprintf("chroot %s /bin/sh -c %s", shellQuote(c.Root.Path()), shellQuote(rc.Command)))
	if err != nil {
		return fmt.Errorf("command_wrapper: %w", err)
	}
	if err := closeInherited(); err != nil {
		return fmt.Errorf("closing inherited descriptors before running in the chroot: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env = c.Env // its PATH also finds chroot(8) and sudo on the host
	cmd.Stdin = rc.Stdin
	cmd.Stdout = rc.Stdout
	cmd.Stderr = rc.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log.Printf("chroot %s: %s", c.Root.Path(), rc.Command)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting a command in the chroot: %w", err)
	}

	waited := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			stopGroup(cmd.Process.Pid, waited)
		case <-waited:
		}
	}()
	go func() {
		err := cmd.Wait()
		close(waited)
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

// stopGroup asks a process group to end, then forces it.
func stopGroup(pgid int, waited <-chan struct{}) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-waited:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
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
		if err := c.Root.CopyIn(filepath.Join(src, e.Name()), path.Join(target, e.Name())); err != nil {
			return fmt.Errorf("upload of %s to %s in the image: %w", src, dst, err)
		}
	}
	return nil
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
// Symlinks in the image are recreated as symlinks, never followed.
func (c *Communicator) DownloadDir(src string, dst string, exclude []string) error {
	if err := c.Root.CopyOut(src, dst); err != nil {
		return fmt.Errorf("download of %s from the image: %w", src, err)
	}
	return nil
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
