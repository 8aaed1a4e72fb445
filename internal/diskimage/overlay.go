package diskimage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Overlay writes dst, a qcow2 image whose backing file is base (recorded by
// its absolute path, with its format) and which holds only what the raw
// disk work has that base has not. Loop devices need a raw working disk and
// there is no NBD here, so the overlay is computed after the fact: an empty
// qcow2 backed by work is rebased onto base in qemu-img's safe mode, which
// compares the two and copies in the differing clusters. Written to
// dst+".part" and renamed when whole.
func Overlay(ctx context.Context, work, base string, baseFmt Format, dst string) (err error) {
	absBase, err := filepath.Abs(base)
	if err != nil {
		return err
	}
	part := dst + ".part"
	defer func() {
		if err != nil {
			os.Remove(part)
		}
	}()
	os.Remove(part)
	if err := CreateOverlay(ctx, work, Raw, part); err != nil {
		return err
	}
	if _, err := runQemuImg(ctx, "rebase", "-q", "-f", "qcow2", "-b", absBase, "-F", string(baseFmt), part); err != nil {
		return fmt.Errorf("overlay on %s: %w", base, err)
	}
	if err := os.Rename(part, dst); err != nil {
		return fmt.Errorf("overlay on %s: %w", base, err)
	}
	return nil
}
