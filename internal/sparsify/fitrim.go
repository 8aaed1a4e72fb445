package sparsify

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// golang.org/x/sys/unix has neither FITRIM nor struct fstrim_range.

// fstrimRange is struct fstrim_range of <linux/fs.h>.
type fstrimRange struct {
	Start  uint64
	Len    uint64 // in: how far; out: bytes discarded
	Minlen uint64
}

// fitrimRequest is FITRIM, _IOWR('X', 121, struct fstrim_range).
const fitrimRequest = 0xc0185879

func ioctlFITRIM(fd int, r *fstrimRange) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fitrimRequest, uintptr(unsafe.Pointer(r)))
	if errno != 0 {
		return errno
	}
	return nil
}
