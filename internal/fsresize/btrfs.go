package fsresize

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
)

// BtrfsMinSize is the smallest size the kernel shrinks a btrfs device to:
// btrfs_ioctl_resize refuses a new size under SZ_256M (fs/btrfs/ioctl.c)
// with EINVAL.
const BtrfsMinSize = 256 << 20

// btrfsSectorSize is what a btrfs device size is a multiple of here (the
// page size, mkfs.btrfs's default sector size on x86-64).
const btrfsSectorSize = 4096

var (
	devicesRE = regexp.MustCompile(`(?m)Total devices (\d+)`)
	devSizeRE = regexp.MustCompile(`(?m)^\s*devid\s+1 size (\d+) `)
	minSizeRE = regexp.MustCompile(`^(\d+) bytes`)
)

// BtrfsDeviceSize is the size, in bytes, the single-device btrfs mounted at
// mountpoint uses of its device (btrfs filesystem show --raw). A
// filesystem of several devices is an error.
func BtrfsDeviceSize(ctx context.Context, mountpoint string) (int64, error) {
	out, err := exec.CommandContext(ctx, "btrfs", "filesystem", "show", "--raw", mountpoint).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("btrfs filesystem show --raw %s: %v: %s", mountpoint, err, out)
	}
	return parseDeviceSize(string(out))
}

func parseDeviceSize(out string) (int64, error) {
	if m := devicesRE.FindStringSubmatch(out); m == nil || m[1] != "1" {
		return 0, fmt.Errorf("btrfs filesystem show: not a filesystem of one device:\n%s", out)
	}
	m := devSizeRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("btrfs filesystem show: no size for devid 1:\n%s", out)
	}
	return strconv.ParseInt(m[1], 10, 64)
}

// ShrinkBtrfs makes the single-device btrfs mounted at mountpoint as small
// as `btrfs inspect-internal min-dev-size` says it can be, plus free bytes
// of room, but not under BtrfsMinSize; the kernel moves the chunks that
// lie beyond the new end. A filesystem already that small is left as it
// is. It returns the device sizes before and after, in bytes.
func ShrinkBtrfs(ctx context.Context, mountpoint string, free int64) (before, after int64, err error) {
	before, err = BtrfsDeviceSize(ctx, mountpoint)
	if err != nil {
		return 0, 0, err
	}
	out, err := exec.CommandContext(ctx, "btrfs", "inspect-internal", "min-dev-size", "--id", "1", mountpoint).CombinedOutput()
	if err != nil {
		return before, before, fmt.Errorf("btrfs inspect-internal min-dev-size %s: %v: %s", mountpoint, err, out)
	}
	m := minSizeRE.FindSubmatch(out)
	if m == nil {
		return before, before, fmt.Errorf("btrfs inspect-internal min-dev-size: no size in its output: %s", out)
	}
	minimum, _ := strconv.ParseInt(string(m[1]), 10, 64)
	target := max(minimum+free, BtrfsMinSize)
	target = (target + btrfsSectorSize - 1) / btrfsSectorSize * btrfsSectorSize
	if target >= before {
		return before, before, nil
	}
	if err := run(ctx, "btrfs", "filesystem", "resize", "1:"+strconv.FormatInt(target, 10), mountpoint); err != nil {
		return before, before, err
	}
	after, err = BtrfsDeviceSize(ctx, mountpoint)
	return before, after, err
}
