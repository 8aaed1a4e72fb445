package sparsify

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// settle undoes, for a reproducible build, what the trim's mount of the
// filesystem of type fstype on device wrote from the clock or randomness:
// ext2/3/4 superblock times (settleExt), the xfs log (settleXFS). btrfs
// writes neither (measured: two trims give the same bytes). A nil src
// changes nothing.
func settle(ctx context.Context, fstype, device string, src *repro.Source) error {
	if !src.Enabled() {
		return nil
	}
	switch fstype {
	case "ext2", "ext3", "ext4":
		return settleExt(ctx, device, src)
	case "xfs":
		return settleXFS(ctx, device)
	}
	return nil
}

// settleXFS rewrites the clean log of the unmounted xfs on device as
// xfs_repair -L does (xfs_db's logformat, cycle 1): the kernel's unmount
// record carries a random transaction ID (fs/xfs/xfs_log.c,
// get_random_u32), xfsprogs' log records a fixed one.
func settleXFS(ctx context.Context, device string) error {
	out, err := exec.CommandContext(ctx, "xfs_db", "-x", "-c", "logformat", device).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Formatting the log") {
		return fmt.Errorf("rewriting the xfs log (xfs_db logformat): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// settleExt sets the last mount and last write times of the unmounted
// ext2/3/4 filesystem on device to src's epoch, where the trim's mount put
// the clock (fs/ext4/super.c: s_mtime at mount, s_wtime at unmount).
// debugfs writes s_mtime (as @seconds: a bare number may parse as a date,
// YYYYMMDD...) and, through E2FSPROGS_FAKE_TIME, s_wtime, with
// the superblock's checksum; the result is read back, as debugfs exits 0
// whatever its request did.
func settleExt(ctx context.Context, device string, src *repro.Source) error {
	e := src.Epoch()
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-R", "set_super_value mtime @"+strconv.FormatInt(e, 10), device)
	cmd.Env = append(os.Environ(), src.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("setting the superblock's times to the epoch (debugfs): %v: %s", err, strings.TrimSpace(string(out)))
	}
	sb := make([]byte, 1024)
	f, err := os.Open(device)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return fmt.Errorf("reading the superblock back: %w", err)
	}
	// s_mtime, s_wtime at 44 and 48; their high bytes at 0x275, 0x274.
	mtime := int64(binary.LittleEndian.Uint32(sb[44:])) | int64(sb[0x275])<<32
	wtime := int64(binary.LittleEndian.Uint32(sb[48:])) | int64(sb[0x274])<<32
	if mtime != e || wtime != e {
		return fmt.Errorf("debugfs left the superblock's mount time %d and write time %d, not the epoch %d: %s", mtime, wtime, e, strings.TrimSpace(string(out)))
	}
	return nil
}
