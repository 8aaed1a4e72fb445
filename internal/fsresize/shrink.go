package fsresize

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// ExtSize is an ext2/3/4 filesystem's size.
type ExtSize struct {
	BlockSize int64
	Blocks    int64
}

// Bytes is the filesystem's size in bytes.
func (s ExtSize) Bytes() int64 { return s.BlockSize * s.Blocks }

// ReadExtSize reads the size from the superblock of the ext2/3/4
// filesystem on device (or in a file).
func ReadExtSize(device string) (ExtSize, error) {
	f, err := os.Open(device)
	if err != nil {
		return ExtSize{}, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return ExtSize{}, fmt.Errorf("reading the ext superblock of %s: %w", device, err)
	}
	if binary.LittleEndian.Uint16(sb[56:58]) != 0xef53 {
		return ExtSize{}, fmt.Errorf("%s holds no ext2/3/4 filesystem", device)
	}
	blocks := int64(binary.LittleEndian.Uint32(sb[4:8]))
	const incompat64bit = 0x80
	if binary.LittleEndian.Uint32(sb[96:100])&incompat64bit != 0 {
		blocks |= int64(binary.LittleEndian.Uint32(sb[0x150:0x154])) << 32
	}
	return ExtSize{BlockSize: 1024 << binary.LittleEndian.Uint32(sb[24:28]), Blocks: blocks}, nil
}

var minimumRE = regexp.MustCompile(`(?m)^Estimated minimum size of the filesystem: (\d+)`)

// ShrinkExt makes the unmounted ext2/3/4 filesystem on device as small as
// resize2fs can make it, plus free bytes of room, after the forced check
// resize2fs demands. A filesystem already that small is left as it is.
// It returns the sizes before and after. With src enabled, the check and
// the resize write the build's epoch, not the clock, in the superblock
// (e2fsck's s_lastcheck and s_wtime through E2FSCK_TIME, resize2fs's
// s_wtime through E2FSPROGS_FAKE_TIME; measured with e2fsprogs 1.47.0, whose
// e2fsck ignores the latter), so the same filesystem shrinks to the same
// bytes.
func ShrinkExt(ctx context.Context, device string, free int64, src *repro.Source) (before, after ExtSize, err error) {
	env := src.Env()
	before, err = ReadExtSize(device)
	if err != nil {
		return before, before, err
	}
	// e2fsck -p exits 1 when it corrected something: still fine; 4 and up
	// are errors it will not fix by itself.
	if err := runEnv(ctx, env, "e2fsck", "-f", "-p", device); err != nil && exitCode(err) != 1 {
		return before, before, fmt.Errorf("the filesystem needs repair before it can shrink: %w", err)
	}
	// resize2fs's estimate is conservative for a large filesystem (it
	// counts the group metadata of the size it has): measured here, 128 MiB
	// with 3 MiB of data estimates 18 MiB, and 10 MiB once at 18. So ask
	// again after each shrink until it gains less than 1 %.
	after = before
	for pass := 0; pass < 4; pass++ {
		minimum, err := minimumBlocks(ctx, device)
		if err != nil {
			return before, after, err
		}
		target := minimum + (free+before.BlockSize-1)/before.BlockSize
		if target >= after.Blocks || (pass > 0 && after.Blocks-target < after.Blocks/100) {
			break
		}
		if err := runEnv(ctx, env, "resize2fs", device, strconv.FormatInt(target, 10)); err != nil {
			return before, after, err
		}
		if after, err = ReadExtSize(device); err != nil {
			return before, after, err
		}
	}
	return before, after, nil
}

// minimumBlocks is resize2fs's estimate of the smallest size, in blocks,
// the filesystem on device can shrink to.
func minimumBlocks(ctx context.Context, device string) (int64, error) {
	out, err := exec.CommandContext(ctx, "resize2fs", "-P", device).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("resize2fs -P %s: %v: %s", device, err, out)
	}
	m := minimumRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("resize2fs -P %s: no minimum size in its output: %s", device, out)
	}
	return strconv.ParseInt(string(m[1]), 10, 64)
}
