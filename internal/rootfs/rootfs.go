// Package rootfs turns a root tree (a directory, a tarball, or a tree made
// by debootstrap) into a root filesystem inside a byte range of a raw disk
// file, keeping owners, modes, hard links, device nodes, ACLs and xattrs.
//
// ext4 is made and filled in one go by mkfs.ext4 -d at an offset of the
// disk file: no loop device, no mount. xfs has no such option here
// (xfsprogs 6.1): the range is attached to a loop device, made, mounted and
// filled with cp -a, every resource through the cleanup journal.
package rootfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// Filesystem types.
const (
	Ext4 = "ext4"
	XFS  = "xfs"
)

// Labels: cloud images' own for ext4; xfs labels hold 12 characters at
// most, so xfs gets diskimage-builder's.
const (
	LabelExt4 = "cloudimg-rootfs"
	LabelXFS  = "img-rootfs"
)

// MaxXFSLabel is the longest xfs label in bytes (sb_fname; ext's hold 16).
const MaxXFSLabel = 12

// DefaultLabel is the root label for fstype.
func DefaultLabel(fstype string) string {
	if fstype == XFS {
		return LabelXFS
	}
	return LabelExt4
}

// Usage is what a tree needs on disk.
type Usage struct {
	Bytes  int64 // file data in 4 KiB blocks, directories and long symlinks
	Inodes int64 // files, directories, links (a hard-linked file once)
}

// Measure walks a tree without following symlinks and sums what its files
// take in 4 KiB blocks; a hard-linked file counts once.
func Measure(tree string) (Usage, error) {
	var u Usage
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st != nil && st.Nlink > 1 && !fi.IsDir() {
			k := [2]uint64{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		u.Inodes++
		switch {
		case fi.Mode().IsRegular():
			u.Bytes += roundUp(fi.Size(), 4096)
		case fi.IsDir():
			u.Bytes += max(4096, roundUp(fi.Size(), 4096))
		case fi.Mode()&fs.ModeSymlink != 0 && fi.Size() > 59:
			u.Bytes += 4096 // longer than fits in the inode
		}
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("measuring the root tree %s: %w", tree, err)
	}
	return u, nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
)

// bytesPerInode is mke2fs's default inode_ratio; inodeSize its inode size.
const (
	bytesPerInode = 16 * kib
	inodeSize     = 256
)

// MinXFSSize is the smallest filesystem mkfs.xfs makes (xfsprogs >= 5.19).
const MinXFSSize = 300 * mib

// Size is how large a filesystem of fstype must be to hold u with free
// bytes to spare, rounded up to a MiB: the data, a few percent for
// metadata and large directories, the journal, the inode tables, and for
// ext4 the 5% reserved for root.
func Size(u Usage, fstype string, free int64) int64 {
	data := u.Bytes + u.Bytes/25 + free
	if fstype == XFS {
		size := roundUp((data+64*mib)*100/95, mib)
		return max(size, MinXFSSize)
	}
	size := data
	for range 4 { // the journal and inode table depend on the size
		inodes := max(size/bytesPerInode, inodesNeeded(u, free))
		fixed := data + journalSize(size) + inodes*inodeSize
		size = fixed * 100 / 93 // 5% reserved, 2% bitmaps, descriptors, slack
	}
	return roundUp(max(size, 16*mib), mib)
}

// inodesNeeded is the tree's inodes with room to grow: a tenth more, and
// one per 16 KiB of free space.
func inodesNeeded(u Usage, free int64) int64 {
	return u.Inodes + u.Inodes/10 + free/bytesPerInode + 1024
}

// journalSize is mke2fs's default journal size for a filesystem of size
// bytes in 4 KiB blocks (ext2fs_default_journal_size).
func journalSize(size int64) int64 {
	blocks := size / 4096
	switch {
	case blocks < 2048:
		return 0
	case blocks < 32768:
		return 4 * mib
	case blocks < 256*1024:
		return 16 * mib
	case blocks < 512*1024:
		return 32 * mib
	case blocks < 4096*1024:
		return 64 * mib
	case blocks < 8192*1024:
		return 128 * mib
	case blocks < 16384*1024:
		return 256 * mib
	case blocks < 32768*1024:
		return 512 * mib
	}
	return 1024 * mib
}

// ErrNoSpace says the tree did not fit in the filesystem.
var ErrNoSpace = errors.New("the root tree does not fit in the filesystem")

// Spec is the filesystem to make.
type Spec struct {
	Type  string // Ext4 or XFS
	Label string
	UUID  string // chosen by the caller, so GRUB and fstab can name it first
	// The tree's usage and the free space wanted, to give ext4 enough
	// inodes.
	Usage Usage
	Free  int64
	// Repro, when not nil, makes the filesystem reproducible (ext4 only:
	// see MakeExt4); nil keeps mke2fs's random hash seed and the clock.
	Repro *repro.Source
}

// run runs a command, its combined output in the error.
func run(ctx context.Context, name string, args ...string) error {
	return runEnv(ctx, nil, name, args...)
}

// runEnv is run with env added to the process's environment.
func runEnv(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", name, ctx.Err())
		}
		return fmt.Errorf("%s: %v: %s", name, err, lastLines(out.String(), 12))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
