// Package fsresize grows a filesystem to fill its (already grown) device,
// with the filesystem's own standard tool.
package fsresize

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Grow enlarges the filesystem of type fstype on device to the device's
// size. xfs and btrfs grow only while mounted, so they need mountpoint;
// ext2/3/4 grow online when mounted and offline (after a forced check, as
// resize2fs demands) when not.
func Grow(ctx context.Context, fstype, device, mountpoint string) error {
	switch fstype {
	case "ext2", "ext3", "ext4":
		if mountpoint == "" {
			// resize2fs insists on a freshly checked filesystem offline.
			// e2fsck -p exits 1 when it corrected something: still fine.
			if err := run(ctx, "e2fsck", "-f", "-p", device); err != nil && exitCode(err) != 1 {
				return err
			}
		}
		return run(ctx, "resize2fs", device)
	case "xfs":
		if mountpoint == "" {
			return fmt.Errorf("xfs on %s grows only while mounted, and it is not mounted", device)
		}
		return run(ctx, "xfs_growfs", mountpoint)
	case "btrfs":
		if mountpoint == "" {
			return fmt.Errorf("btrfs on %s grows only while mounted, and it is not mounted", device)
		}
		return run(ctx, "btrfs", "filesystem", "resize", "max", mountpoint)
	case "":
		return fmt.Errorf("%s holds no filesystem to grow", device)
	default:
		return fmt.Errorf("growing a %s filesystem (on %s) is not supported; ext4, xfs and btrfs are", fstype, device)
	}
}

// exitCode is the exit status behind an error of run, or -1.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return -1
}

type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func run(ctx context.Context, name string, args ...string) error {
	return runEnv(ctx, nil, name, args...)
}

// runEnv is run with env added to the environment.
func runEnv(ctx context.Context, env []string, name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		msg := fmt.Sprintf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return &exitError{code: ee.ExitCode(), msg: msg}
		}
		return errors.New(msg)
	}
	return nil
}
