package ext4repro

import (
	"fmt"
	"os"
	"path/filepath"
)

// MountData is the mount data a reproducible build adds to an ext2/3/4
// mount that writes ("" for other types): noinit_itable, because the
// kernel's lazy inode-table initialisation thread (ext4lazyinit, started
// after a random delay of up to 5 s, fs/ext4/super.c) otherwise zeroes
// groups' inode tables and sets their ITABLE_ZEROED flag in the group
// descriptors for as long as the mount happens to last (measured: the
// only difference left between two builds of a base image made by
// mke2fs with lazy_itable_init). The tables are still zeroed by the first
// mount without the option.
func MountData(fstype string) string {
	switch fstype {
	case "ext2", "ext3", "ext4":
		return "noinit_itable"
	}
	return ""
}

// Tune sets the allocator knobs of the ext4 filesystem mounted from the
// block device dev (/dev/loopN), through /sys/fs/ext4/loopN (the kernel's
// Documentation/ABI/testing/sysfs-fs-ext4): mb_stream_req 0 makes every data
// allocation a stream allocation, so no file goes through the per-CPU
// locality groups (fs/ext4/mballoc.c ext4_mb_group_or_file), whose
// preallocations put a file where the CPU that happened to write it back
// had its group.
func Tune(dev string) error {
	p := filepath.Join("/sys/fs/ext4", filepath.Base(dev), "mb_stream_req")
	if err := os.WriteFile(p, []byte("0"), 0); err != nil {
		return fmt.Errorf("ext4 allocator of %s: %w", dev, err)
	}
	return nil
}
