// Package fuseexport shows a disk image in a format the kernel cannot read
// (qcow2, vmdk, vhdx, vpc) as a raw file, so that loop devices can attach
// its partitions and the image is changed where it is, without a full
// conversion to raw and back. This kernel has no NBD (MACHINE.md), so the
// bridge is qemu-storage-daemon's FUSE export: a regular file whose reads
// and writes the daemon turns into the image format's own.
//
// The daemon, its FUSE mount and the placeholder file are journaled
// (internal/cleanup), so a killed build's daemon is ended by the reaper.
package fuseexport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// ErrUnavailable says this host cannot export images over FUSE (no
// qemu-storage-daemon, or no /dev/fuse): callers fall back to a copy.
var ErrUnavailable = errors.New("no FUSE export on this host")

// readyTimeout bounds the wait for the export to appear.
const readyTimeout = 30 * time.Second

// Export is an image shown as a raw file at Path.
type Export struct {
	Path string // the raw view: attach loop devices to it

	journal          *cleanup.Journal
	cmd              *exec.Cmd
	exited           chan struct{}
	stderr           *bytes.Buffer
	fileH, mountH    cleanup.Handle
	procH            cleanup.Handle
	procTaken, alive bool
}

// Open exports image (of the given qemu format name) read-write as a raw
// file beside it, named after it and hidden. Close ends the export, and
// with it every change is in the image file.
func Open(ctx context.Context, image, format string, journal *cleanup.Journal) (*Export, error) {
	if _, err := exec.LookPath("qemu-storage-daemon"); err != nil {
		return nil, fmt.Errorf("%w: qemu-storage-daemon not found (Debian package qemu-system-common)", ErrUnavailable)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	abs, err := filepath.Abs(image)
	if err != nil {
		return nil, err
	}
	// Resolved as mountinfo will show the mount point.
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(dir, filepath.Base(abs))
	}
	e := &Export{Path: filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs)+".raw-view"), journal: journal}
	if e.fileH, err = journal.Take(cleanup.FileEntry(e.Path)); err != nil {
		return nil, err
	}
	// The FUSE export mounts over an existing regular file.
	if err := os.WriteFile(e.Path, nil, 0o600); err != nil {
		return nil, errors.Join(fmt.Errorf("fuseexport: %w", err), journal.Release(e.fileH))
	}
	if e.mountH, err = journal.Take(cleanup.MountEntry(e.Path, "qemu-storage-daemon", "fuse")); err != nil {
		return nil, errors.Join(err, journal.Release(e.fileH))
	}
	if err := e.start(ctx, abs, format); err != nil {
		return nil, errors.Join(err, e.Close())
	}
	return e, nil
}

func (e *Export) start(ctx context.Context, image, format string) error {
	e.stderr = &bytes.Buffer{}
	e.cmd = exec.Command("qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=proto,filename="+escape(image),
		// discard=unmap: the trim's discards reach the image (zero clusters
		// in an overlay) instead of being ignored.
		"--blockdev", "driver="+format+",node-name=fmt,file=proto,discard=unmap",
		"--export", "type=fuse,id=view,node-name=fmt,writable=on,mountpoint="+escape(e.Path),
	)
	e.cmd.Stdout, e.cmd.Stderr = e.stderr, e.stderr
	// Its own process group: a Ctrl-C to Packer's group must not end the
	// daemon before the loop devices on its file are released; Close ends it.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cleanup.CloseInheritedFDs(); err != nil {
		return fmt.Errorf("fuseexport: %w", err)
	}
	if err := e.cmd.Start(); err != nil {
		return fmt.Errorf("fuseexport: starting qemu-storage-daemon: %w", err)
	}
	e.alive, e.exited = true, make(chan struct{})
	go func() { e.cmd.Wait(); close(e.exited) }()
	entry, err := cleanup.ProcessEntry(image, e.cmd.Process.Pid)
	if err == nil {
		e.procH, err = e.journal.Take(entry)
		e.procTaken = err == nil
	}
	if err != nil {
		return err
	}
	deadline := time.After(readyTimeout)
	for {
		// Only the daemon mounts on the placeholder this build just made.
		if ok, err := cleanup.IsMountPoint(e.Path); err != nil {
			return err
		} else if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.exited:
			e.alive = false // reported here, not again by Close
			return fmt.Errorf("fuseexport: qemu-storage-daemon could not open %s as %s: %s", image, format, strings.TrimSpace(e.stderr.String()))
		case <-deadline:
			return fmt.Errorf("fuseexport: the FUSE export of %s did not appear within %s", image, readyTimeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close ends the daemon (SIGTERM: it flushes the image and unmounts the
// export), then makes sure the mount and the placeholder are gone. Release
// the loop devices on Path first.
func (e *Export) Close() error {
	var errs []error
	if e.cmd != nil {
		// SIGTERM makes the daemon flush the image and unmount. On a loaded
		// host that can take longer than the journal's generic grace (3 s,
		// then SIGKILL, which would lose the flush): wait for it here first.
		e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(flushGrace):
		}
		if e.procTaken {
			errs = append(errs, e.journal.Release(e.procH)) // exited: drops the entry; else SIGTERM, SIGKILL after 3 s
		}
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
			e.cmd.Process.Kill()
			<-e.exited
		}
		if st, ok := e.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && e.alive && (st.Signaled() || st.ExitStatus() != 0) {
			errs = append(errs, fmt.Errorf("fuseexport: qemu-storage-daemon ended badly (%v): %s", e.cmd.ProcessState, strings.TrimSpace(e.stderr.String())))
		}
		e.cmd, e.alive = nil, false
	}
	errs = append(errs, e.journal.Release(e.mountH), e.journal.Release(e.fileH))
	return errors.Join(errs...)
}

// flushGrace is how long Close waits for the daemon to flush the image and
// exit after SIGTERM before it is killed. Measured: a few milliseconds on
// an idle host; over 3 s once while TCG guests loaded both cores.
const flushGrace = 60 * time.Second

// escape doubles the commas in a value of qemu's key=value option syntax.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
