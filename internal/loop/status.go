package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Status is the binding of one loop device.
type Status struct {
	Device     string // /dev/loopN
	Number     int
	Backing    string // backing file as the kernel reports it (" (deleted)" stripped)
	BackingDev uint64
	BackingIno uint64
	Offset     int64
	SizeLimit  int64 // 0 = to the end of the file
	ReadOnly   bool
	AutoClear  bool
}

// Info reads the binding of devPath: the path from sysfs (it is not
// truncated there) and the backing inode from LOOP_GET_STATUS64. An unbound
// device gives an error wrapping ErrNotBound, a missing one os.ErrNotExist.
func Info(devPath string) (Status, error) {
	n, err := number(devPath)
	if err != nil {
		return Status{}, err
	}
	s := Status{Device: devPath, Number: n}
	sys := fmt.Sprintf("/sys/block/loop%d", n)
	if b, err := os.ReadFile(sys + "/loop/backing_file"); err == nil {
		s.Backing = strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
	} else if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(sys); err != nil {
			return s, fmt.Errorf("loop: %s: no such device: %w", devPath, os.ErrNotExist)
		}
		return s, fmt.Errorf("loop: %s: %w", devPath, ErrNotBound)
	}
	s.Offset = readInt(sys + "/loop/offset")
	s.SizeLimit = readInt(sys + "/loop/sizelimit")
	s.AutoClear = readInt(sys+"/loop/autoclear") == 1
	s.ReadOnly = readInt(sys+"/ro") == 1

	fd, err := unix.Open(devPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENXIO) { // being torn down
			return s, fmt.Errorf("loop: %s: %w", devPath, ErrNotBound)
		}
		if errors.Is(err, unix.ENOENT) {
			return s, nil // bound but no node in /dev: sysfs is all we know (inode 0)
		}
		return s, fmt.Errorf("loop: opening %s: %w", devPath, err)
	}
	defer unix.Close(fd)
	li, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		if errors.Is(err, unix.ENXIO) {
			return s, fmt.Errorf("loop: %s: %w", devPath, ErrNotBound)
		}
		return s, fmt.Errorf("loop: LOOP_GET_STATUS64 on %s: %w", devPath, err)
	}
	s.BackingDev = li.Device
	s.BackingIno = li.Inode
	s.Offset = int64(li.Offset)
	s.SizeLimit = int64(li.Sizelimit)
	s.ReadOnly = li.Flags&unix.LO_FLAGS_READ_ONLY != 0
	s.AutoClear = li.Flags&unix.LO_FLAGS_AUTOCLEAR != 0
	if s.Backing == "" { // sysfs raced with a new binding; the ioctl's name is at most 63 bytes
		s.Backing = unix.ByteSliceToString(li.File_name[:])
	}
	return s, nil
}

// List returns every bound loop device on the machine, by number.
func List() ([]Status, error) {
	matches, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var out []Status
	for _, m := range matches {
		name := filepath.Base(filepath.Dir(filepath.Dir(m)))
		s, err := Info("/dev/" + name)
		if errors.Is(err, ErrNotBound) || errors.Is(err, os.ErrNotExist) {
			continue // unbound since the glob
		}
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

func readInt(path string) int64 {
	b, _ := os.ReadFile(path)
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// number extracts N from /dev/loopN.
func number(devPath string) (int, error) {
	base := filepath.Base(devPath)
	n, err := strconv.Atoi(strings.TrimPrefix(base, "loop"))
	if err != nil || !strings.HasPrefix(base, "loop") || n < 0 {
		return 0, fmt.Errorf("loop: %q is not a loop device path (want /dev/loopN)", devPath)
	}
	return n, nil
}
