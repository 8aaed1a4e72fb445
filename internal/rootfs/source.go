package rootfs

import (
	"context"
	"fmt"
	"os"
)

// Extract unpacks a tarball (plain, gzip, xz, zstd or bzip2: GNU tar
// recognises the compression by content) into dir, as root keeps it:
// numeric owners, modes, xattrs, ACLs, device nodes and hard links. GNU
// tar refuses members that would land outside dir (.., absolute names,
// writes through symlinks it made).
func Extract(ctx context.Context, tarball, dir string) error {
	fi, err := os.Stat(tarball)
	if err != nil {
		return fmt.Errorf("source_rootfs: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("source_rootfs %s is neither a directory nor a tarball", tarball)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err = run(ctx, "tar", "-C", dir, "--numeric-owner", "--same-owner", "-p",
		"--xattrs", "--xattrs-include=*", "--acls", "-xf", tarball)
	if err != nil {
		return fmt.Errorf("source_rootfs %s is not a tarball tar can read (.tar, .tar.gz, .tar.xz, .tar.zst): %w", tarball, err)
	}
	return nil
}
