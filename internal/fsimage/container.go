package fsimage

import (
	"context"
	"fmt"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// Container says what wraps the filesystem image at path: "" when nothing
// does (a bare file, or a compressed file whose content does not start
// with an ext or xfs superblock, such as a compressed tarball), else "a
// qcow2 image" (or another format qemu-img reads) or "a zstd-compressed
// file" (gzip, xz). Both are told by content (diskimage.Detect,
// DetectCompression); a compressed file's first HeadSize bytes are
// decompressed to look.
func Container(path string) (string, error) {
	format, err := diskimage.Detect(path)
	if err != nil {
		return "", err
	}
	if format != diskimage.Raw {
		return "a " + string(format) + " image", nil
	}
	kind, err := diskimage.DetectCompression(path)
	if err != nil || kind == diskimage.NoCompression {
		return "", err
	}
	head, err := diskimage.DecompressedHead(path, HeadSize)
	if err != nil || !Recognised(head) {
		return "", nil // for tar, which says what is wrong with it
	}
	if kind == diskimage.XZ {
		return "an xz-compressed file", nil
	}
	return "a " + string(kind) + "-compressed file", nil
}

// Unwrap writes the content of the container at path (see Container) to
// dst, a sparse raw file, without changing path.
func Unwrap(ctx context.Context, path, dst string) error {
	format, err := diskimage.Detect(path)
	if err != nil {
		return err
	}
	if format != diskimage.Raw {
		return diskimage.ConvertToRaw(ctx, path, format, dst, nil)
	}
	if err := diskimage.Decompress(ctx, path, dst, nil); err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	return nil
}
