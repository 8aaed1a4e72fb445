package ext4repro

import (
	"fmt"
	"os"
	"path/filepath"
)

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
