package rootfs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// MakeExt4 makes an ext4 filesystem of size bytes at offset in the disk
// file and fills it from tree, in one mkfs.ext4 -d: owners, modes, hard
// links, device nodes, ACLs and xattrs are copied by mke2fs itself.
func MakeExt4(ctx context.Context, disk string, offset, size int64, tree string, s Spec) error {
	args := []string{
		"-q", "-F", // -F: the file holds a partition table, which mke2fs would ask about
		"-t", "ext4", "-b", "4096",
		"-L", s.Label, "-U", s.UUID,
		// GRUB 2.06 cannot read filesystems with metadata_csum_seed.
		"-O", "^metadata_csum_seed",
		// nodiscard: mke2fs would punch the whole file, partition table
		// and boot loader included.
		"-E", "offset=" + strconv.FormatInt(offset, 10) + ",nodiscard",
		"-d", tree,
	}
	if need := inodesNeeded(s.Usage, s.Free); size/bytesPerInode < need {
		args = append(args, "-N", strconv.FormatInt(need, 10))
	}
	args = append(args, disk, strconv.FormatInt(size/kib, 10)+"k")
	if err := run(ctx, "mkfs.ext4", args...); err != nil {
		if strings.Contains(err.Error(), "Could not allocate block") || strings.Contains(err.Error(), "No space left") ||
			strings.Contains(err.Error(), "Could not allocate inode") {
			return fmt.Errorf("%w (ext4 of %d MiB): %v", ErrNoSpace, size/mib, err)
		}
		return fmt.Errorf("making the ext4 root filesystem from %s: %w", tree, err)
	}
	return nil
}
