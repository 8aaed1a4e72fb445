// Package loop attaches files (or a byte range of a file) to loop devices
// through ioctl, without losetup and without relying on the kernel's
// partition scanning: one device per partition, with an offset and a size
// limit.
//
// Every device is attached with LO_FLAGS_AUTOCLEAR, so the kernel frees it
// when its last user (our fd, a mount) goes away: a killed build cannot leak
// an unmounted loop device.
package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const loopControl = "/dev/loop-control"

// maxAttempts bounds the GET_FREE/CONFIGURE race loop: another process may
// take the device GET_FREE returned before we configure it (EBUSY).
const maxAttempts = 64

// ErrNotBound is returned (wrapped) by Info when the device exists but is
// not bound to a backing file.
var ErrNotBound = errors.New("loop device is not bound to a backing file")

// Pending describes a device about to be configured; it is handed to
// AttachOpts.BeforeConfigure so a journal can record it before it is taken.
type Pending struct {
	Device     string // /dev/loopN
	Backing    string // absolute path of the backing file
	BackingDev uint64 // st_dev of the backing file
	BackingIno uint64 // st_ino of the backing file
	Offset     int64
	Size       int64 // 0 = to the end of the file
}

// AttachOpts configures AttachWith.
type AttachOpts struct {
	Backing  string
	Offset   int64 // byte offset into Backing
	Size     int64 // size limit in bytes; 0 = to the end of the file
	ReadOnly bool
	// BeforeConfigure, if set, runs after a free device was picked and
	// before it is bound. It may run more than once (a new candidate each
	// time) when another process grabs the picked device first; a
	// candidate it saw but that was not returned by AttachWith is not ours.
	// An error aborts the attach.
	BeforeConfigure func(Pending) error
}

// Device is a loop device bound by this process. It keeps an fd open on the
// device for its whole life; with autoclear, the binding ends when that fd
// and every other user (mounts) are gone.
type Device struct {
	mu     sync.Mutex
	fd     int // -1 once closed
	status Status
}

// Attach binds size bytes of backing, starting at offset, to a free loop
// device. size 0 means "to the end of the file".
func Attach(backing string, offset, size int64, readOnly bool) (*Device, error) {
	return AttachWith(AttachOpts{Backing: backing, Offset: offset, Size: size, ReadOnly: readOnly})
}

// AttachWith is Attach with a BeforeConfigure hook.
func AttachWith(o AttachOpts) (*Device, error) {
	return attach(o, false)
}

// attach does the work; legacy forces LOOP_SET_FD + LOOP_SET_STATUS64 so
// tests can cover the path taken on kernels older than 5.8.
func attach(o AttachOpts, legacy bool) (*Device, error) {
	if o.Offset < 0 || o.Size < 0 {
		return nil, fmt.Errorf("loop: attaching %s: negative offset (%d) or size (%d)", o.Backing, o.Offset, o.Size)
	}
	backing, err := filepath.Abs(o.Backing)
	if err != nil {
		return nil, fmt.Errorf("loop: attaching %s: %w", o.Backing, err)
	}
	if p, err := filepath.EvalSymlinks(backing); err == nil {
		backing = p // the kernel reports the resolved path; record the same
	}
	mode := unix.O_RDWR
	if o.ReadOnly {
		mode = unix.O_RDONLY
	}
	bfd, err := unix.Open(backing, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: opening backing file %s: %w", backing, err)
	}
	// The kernel takes its own reference on the file once bound.
	defer unix.Close(bfd)

	var st unix.Stat_t
	if err := unix.Fstat(bfd, &st); err != nil {
		return nil, fmt.Errorf("loop: stat %s: %w", backing, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		if o.Offset >= st.Size {
			return nil, fmt.Errorf("loop: offset %d is at or past the end of %s (%d bytes)", o.Offset, backing, st.Size)
		}
		if o.Size > 0 && o.Offset+o.Size > st.Size {
			return nil, fmt.Errorf("loop: range %d+%d ends at byte %d, past the end of %s (%d bytes)",
				o.Offset, o.Size, o.Offset+o.Size, backing, st.Size)
		}
	}

	ctl, err := unix.Open(loopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: opening %s: %w", loopControl, err)
	}
	defer unix.Close(ctl)

	info := unix.LoopInfo64{
		Offset:    uint64(o.Offset),
		Sizelimit: uint64(o.Size),
		Flags:     unix.LO_FLAGS_AUTOCLEAR, // never LO_FLAGS_DIRECT_IO: the image is a sparse file we also read directly
	}
	if o.ReadOnly {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	copy(info.File_name[:len(info.File_name)-1], backing)

	for attempt := 0; attempt < maxAttempts; attempt++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop: LOOP_CTL_GET_FREE on %s: %w", loopControl, err)
		}
		devPath := fmt.Sprintf("/dev/loop%d", n)
		if err := ensureNode(devPath, n); err != nil {
			return nil, err
		}
		dfd, err := unix.Open(devPath, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // being torn down by someone else
				continue
			}
			return nil, fmt.Errorf("loop: opening %s: %w", devPath, err)
		}
		if o.BeforeConfigure != nil {
			p := Pending{Device: devPath, Backing: backing, BackingDev: uint64(st.Dev), BackingIno: st.Ino, Offset: o.Offset, Size: o.Size}
			if err := o.BeforeConfigure(p); err != nil {
				unix.Close(dfd)
				return nil, fmt.Errorf("loop: before attaching %s to %s: %w", devPath, backing, err)
			}
		}
		err = configure(dfd, bfd, &info, legacy)
		if errors.Is(err, unix.EBUSY) {
			unix.Close(dfd)
			continue
		}
		if err != nil {
			unix.Close(dfd)
			return nil, fmt.Errorf("loop: binding %s to %s (offset %d, size %d): %w", devPath, backing, o.Offset, o.Size, err)
		}
		return &Device{fd: dfd, status: Status{
			Device: devPath, Number: n, Backing: backing,
			BackingDev: uint64(st.Dev), BackingIno: st.Ino,
			Offset: o.Offset, SizeLimit: o.Size, ReadOnly: o.ReadOnly, AutoClear: true,
		}}, nil
	}
	return nil, fmt.Errorf("loop: attaching %s: every free device was taken by another process (%d attempts)", backing, maxAttempts)
}

// configure binds bfd to the device dfd. LOOP_CONFIGURE (Linux 5.8) does it
// in one step; older kernels need LOOP_SET_FD then LOOP_SET_STATUS64.
func configure(dfd, bfd int, info *unix.LoopInfo64, legacy bool) error {
	if !legacy {
		err := unix.IoctlLoopConfigure(dfd, &unix.LoopConfig{Fd: uint32(bfd), Info: *info})
		if err == nil || !(errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL)) {
			return err
		}
	}
	if err := unix.IoctlSetInt(dfd, unix.LOOP_SET_FD, bfd); err != nil {
		return err
	}
	legacyInfo := *info
	legacyInfo.Flags &^= unix.LO_FLAGS_READ_ONLY // not settable here; follows the backing fd's mode
	if err := unix.IoctlLoopSetStatus64(dfd, &legacyInfo); err != nil {
		unix.IoctlSetInt(dfd, unix.LOOP_CLR_FD, 0)
		return fmt.Errorf("LOOP_SET_STATUS64: %w", err)
	}
	return nil
}

// ensureNode creates /dev/loopN when the kernel made the device but nothing
// (udev, devtmpfs) made its node, as in some containers.
func ensureNode(devPath string, n int) error {
	if _, err := os.Stat(devPath); err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	major, minor := uint32(7), uint32(n)
	if b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/dev", n)); err == nil {
		fmt.Sscanf(string(b), "%d:%d", &major, &minor)
	}
	err := unix.Mknod(devPath, unix.S_IFBLK|0o660, int(unix.Mkdev(major, minor)))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("loop: creating missing device node %s (block %d:%d): %w", devPath, major, minor, err)
	}
	return nil
}

// Path returns the device node, e.g. /dev/loop3.
func (d *Device) Path() string { return d.status.Device }

// Number returns N of /dev/loopN.
func (d *Device) Number() int { return d.status.Number }

// Status returns what the device was bound with.
func (d *Device) Status() Status { return d.status }

// Rdev is the device number (major, minor as unix.Mkdev packs them) of
// the device held, read with fstat on its open fd, not from a path that
// may name another node by now. It fails once the device is closed.
func (d *Device) Rdev() (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return 0, fmt.Errorf("loop: %s is closed", d.Path())
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return 0, fmt.Errorf("loop: stat %s: %w", d.Path(), err)
	}
	return st.Rdev, nil
}

// Close drops this process's reference. With autoclear the device is
// unbound as soon as no mount or other opener uses it. Safe to call twice.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return fmt.Errorf("loop: closing %s: %w", d.Path(), err)
	}
	return nil
}

// Detach unbinds the device (LOOP_CLR_FD), closes it and waits until the
// kernel has really let go. It fails when the device is still in use (for
// example still mounted); the kernel then unbinds it when that user goes.
func (d *Device) Detach() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return waitUnbound(d.status, 2*time.Second)
	}
	err := clearFD(d.fd, d.Path())
	unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return err
	}
	return waitUnbound(d.status, 2*time.Second)
}

// clearFD issues LOOP_CLR_FD, retrying while an old kernel says EBUSY
// (a short-lived opener such as a udev probe). ENXIO means already unbound.
func clearFD(fd int, devPath string) error {
	var err error
	for i := 0; i < 10; i++ {
		err = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		if err == nil || errors.Is(err, unix.ENXIO) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("loop: LOOP_CLR_FD on %s: %w", devPath, err)
}

// waitUnbound polls until the device no longer carries the binding in s.
// Since Linux 5.x LOOP_CLR_FD only marks the device; the unbinding happens
// when its last opener closes it.
func waitUnbound(s Status, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		cur, err := Info(s.Device)
		if err != nil {
			if errors.Is(err, ErrNotBound) || errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if cur.BackingIno != s.BackingIno || cur.Offset != s.Offset {
			return nil // unbound and already reused by someone else
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loop: %s is still bound to %s after LOOP_CLR_FD: it is still open elsewhere (mounted?); the kernel unbinds it when its last user closes it",
				s.Device, cur.Backing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DetachIfBacking detaches devPath only while it is still bound to the
// backing file with inode backingIno at offset: a loop number that was
// freed and reused by someone else is left alone. It reports whether it
// detached. A missing or unbound device is not an error (already released).
// backingPath is only used in messages.
func DetachIfBacking(devPath, backingPath string, backingIno uint64, offset int64) (bool, error) {
	fd, err := unix.Open(devPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) {
			return false, nil
		}
		return false, fmt.Errorf("loop: opening %s to detach it from %s: %w", devPath, backingPath, err)
	}
	li, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENXIO) {
			return false, nil
		}
		return false, fmt.Errorf("loop: LOOP_GET_STATUS64 on %s: %w", devPath, err)
	}
	if li.Inode != backingIno || int64(li.Offset) != offset {
		unix.Close(fd)
		return false, nil
	}
	err = clearFD(fd, devPath)
	unix.Close(fd)
	if err != nil {
		return false, err
	}
	s := Status{Device: devPath, Backing: backingPath, BackingIno: backingIno, Offset: offset}
	return true, waitUnbound(s, 2*time.Second)
}
