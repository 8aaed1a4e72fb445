package rootfs

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/ext4repro"
)

// MakeExt4 makes an ext4 filesystem of size bytes at offset in the disk
// file and fills it from tree, in one mkfs.ext4 -d: owners, modes, hard
// links, device nodes, ACLs and xattrs are copied by mke2fs itself.
//
// With s.Repro the result depends only on the tree's names, contents and
// metadata (times clamped) and on the Source: the htree hash seed is
// derived (-E hash_seed; the UUID is the caller's), mke2fs's clock is the
// epoch (E2FSPROGS_FAKE_TIME: s_mkfs_time, s_wtime, s_lastcheck, the
// crtime and times of the inodes mke2fs makes itself; lib/ext2fs
// initialize.c, closefs.c and inode.c of e2fsprogs 1.47.0), and the times
// mke2fs copies from the tree (atime, mtime, and the ctime of the tree's
// extraction) are clamped to the epoch afterwards (ext4repro.ClampTimes:
// Normalize found nothing else to change in what mke2fs made). The
// order of the files needs nothing: mke2fs -d reads each directory with
// scandir(3) and alphasort, and sets no LC_COLLATE, so the order is the
// names' byte order (misc/create_inode.c and misc/mke2fs.c of 1.47.0).
func MakeExt4(ctx context.Context, disk string, offset, size int64, tree string, s Spec) error {
	ext := "offset=" + strconv.FormatInt(offset, 10) + ",nodiscard"
	if s.Repro.Enabled() {
		ext += ",hash_seed=" + s.Repro.UUID("ext4/root/hash-seed").String()
	}
	args := []string{
		"-q", "-F", // -F: the file holds a partition table, which mke2fs would ask about
		"-t", "ext4", "-b", "4096",
		"-L", s.Label, "-U", s.UUID,
		// GRUB 2.06 cannot read filesystems with metadata_csum_seed.
		"-O", "^metadata_csum_seed",
		// nodiscard: mke2fs would punch the whole file, partition table
		// and boot loader included.
		"-E", ext,
		"-d", tree,
	}
	if need := inodesNeeded(s.Usage, s.Free); size/bytesPerInode < need {
		args = append(args, "-N", strconv.FormatInt(need, 10))
	}
	args = append(args, disk, strconv.FormatInt(size/kib, 10)+"k")
	if err := runEnv(ctx, s.Repro.Env(), "mkfs.ext4", args...); err != nil {
		if strings.Contains(err.Error(), "Could not allocate block") || strings.Contains(err.Error(), "No space left") ||
			strings.Contains(err.Error(), "Could not allocate inode") {
			return fmt.Errorf("%w (ext4 of %d MiB): %v", ErrNoSpace, size/mib, err)
		}
		return fmt.Errorf("making the ext4 root filesystem from %s: %w", tree, err)
	}
	if s.Repro.Enabled() {
		if _, err := ext4repro.ClampTimes(ext4repro.Region{Path: disk, Offset: offset, Size: size}, s.Repro); err != nil {
			return fmt.Errorf("normalizing the new ext4 root filesystem: %w", err)
		}
	}
	return nil
}
