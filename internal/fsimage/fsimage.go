// Package fsimage reads a filesystem image file: a bare ext2/3/4 or xfs
// filesystem with no partition table around it, as an AMI's image file or
// a dd of one partition holds. It never writes to the file: Probe reads
// the superblock in user space (type, UUID, label, features, clean or
// not), and Mount attaches the file read-only and mounts it read-only
// without replaying its journal, every resource through the cleanup
// journal.
package fsimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Filesystem types Probe recognises, spelled as mount(2) takes them.
const (
	Ext2 = "ext2"
	Ext3 = "ext3"
	Ext4 = "ext4"
	XFS  = "xfs"
)

// Info is what a filesystem image's superblock says.
type Info struct {
	Type  string // Ext2, Ext3, Ext4 or XFS (as blkid names them)
	UUID  string // the filesystem UUID, lower-case with dashes
	Label string // "" when it has none
	Size  int64  // bytes the filesystem spans (blocks x block size)
	// Unclean: the journal holds changes not yet written in place (ext3/4
	// needs_recovery). Mount does not replay them: the copy lacks the last
	// writes before the crash.
	Unclean bool
}

// ErrNotFilesystem says the file holds no filesystem Probe recognises.
var ErrNotFilesystem = errors.New("not an ext2/3/4 or xfs filesystem image")

// ErrUnsupported says the file holds a filesystem of a known type with
// features this program cannot read (the error names them).
var ErrUnsupported = errors.New("unsupported filesystem features")

// HeadSize covers every superblock and signature Probe, Recognised and
// Identify look at: ext's at 1024, xfs's at 0, btrfs's at 64 KiB, GPT's
// at 512.
const HeadSize = 0x10000 + 0x1000

// Recognised reports whether head, a file's first HeadSize bytes, starts
// with an ext2/3/4 or xfs superblock (whether Probe would read it, before
// its checks).
func Recognised(head []byte) bool { return isExt(head) || isXFS(head) }

// Probe reads the superblock of the filesystem image at path. It returns
// ErrNotFilesystem (wrapped, with what the file seems to hold instead
// when that is known: a partitioned disk, a qcow2, another filesystem) or
// ErrUnsupported (wrapped, naming the features) for files it cannot use.
func Probe(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Info{}, err
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("%s is not a regular file", path)
	}
	head := make([]byte, HeadSize)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return Info{}, fmt.Errorf("reading %s: %w", path, err)
	}
	head = head[:n]
	var info Info
	switch {
	case isExt(head):
		info, err = probeExt(head)
	case isXFS(head):
		info, err = probeXFS(head)
	default:
		if what := Identify(head); what != "" {
			return Info{}, fmt.Errorf("%w: it holds %s", ErrNotFilesystem, what)
		}
		return Info{}, ErrNotFilesystem
	}
	if err != nil {
		return Info{}, err
	}
	if info.Size > fi.Size() {
		return Info{}, fmt.Errorf("%w: the %s filesystem spans %d bytes but the file has %d: it was cut short (an incomplete download or copy?)",
			ErrUnsupported, info.Type, info.Size, fi.Size())
	}
	return info, nil
}

// signatures are other things a file given as a root filesystem may be,
// for the error message: offset, magic, name.
var signatures = []struct {
	off   int
	magic string
	what  string
}{
	{0, "QFI\xfb", "a qcow2 disk image"},
	{0, "KDMV", "a VMDK disk image"},
	{0, "vhdxfile", "a VHDX disk image"},
	{0, "hsqs", "a squashfs filesystem"},
	{0x10040, "_BHRfS_M", "a btrfs filesystem"},
	{512, "EFI PART", "a whole disk with a GPT partition table"},
	{0x8001, "CD001", "an ISO 9660 filesystem"},
	{0x52, "FAT32   ", "a FAT32 filesystem"},
	{257, "ustar", "a tar archive"},
	{0, "\x1f\x8b", "a gzip-compressed file"},
	{0, "\xfd7zXZ\x00", "an xz-compressed file"},
	{0, "\x28\xb5\x2f\xfd", "a zstd-compressed file"},
}

// Identify names what head (the first bytes of a file) holds when it is
// not a filesystem Probe reads, or "" if it does not know. A boot sector's
// 0x55AA with a partition entry says "a whole disk with an MBR partition
// table".
func Identify(head []byte) string {
	for _, s := range signatures {
		if len(head) >= s.off+len(s.magic) && string(head[s.off:s.off+len(s.magic)]) == s.magic {
			return s.what
		}
	}
	if len(head) >= 512 && head[510] == 0x55 && head[511] == 0xaa {
		for i := 0; i < 4; i++ {
			if e := head[446+16*i : 446+16*i+16]; e[4] != 0 && binary.LittleEndian.Uint32(e[12:16]) != 0 {
				return "a whole disk with an MBR partition table"
			}
		}
	}
	return ""
}

// formatUUID spells 16 bytes as a UUID.
func formatUUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// cString is a fixed-size, NUL-padded field.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

// featureNames spells the set bits of v, by names where known and in hex
// where not.
func featureNames(v uint32, names map[uint32]string) string {
	var out []string
	for bit := uint32(1); bit != 0; bit <<= 1 {
		if v&bit == 0 {
			continue
		}
		if n, ok := names[bit]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("unknown 0x%x", bit))
		}
	}
	return strings.Join(out, ", ")
}
