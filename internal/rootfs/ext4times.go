package rootfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
)

// Offsets in the ext4 superblock, group descriptor and inode (the kernel's
// fs/ext4/ext4.h; e2fsprogs lib/ext2fs/ext2_fs.h).
const (
	sbOffset          = 1024
	sbFirstDataBlock  = 0x14
	sbLogBlockSize    = 0x18
	sbInodesPerGroup  = 0x28
	sbMagic           = 0x38
	sbInodesCount     = 0x00
	sbInodeSize       = 0x58
	sbFeatureIncompat = 0x60
	sbFeatureROCompat = 0x64
	sbUUID            = 0x68
	sbDescSize        = 0xfe
	sbChecksumSeed    = 0x270

	incompat64Bit    = 0x80
	incompatCsumSeed = 0x2000
	roMetadataCsum   = 0x400

	bgInodeBitmapLo = 0x04
	bgInodeTableLo  = 0x08
	bgFlags         = 0x12
	bgInodeBitmapHi = 0x24
	bgInodeTableHi  = 0x28
	bgInodeUninit   = 0x1

	iAtime       = 0x08
	iCtime       = 0x0c
	iMtime       = 0x10
	iGeneration  = 0x64
	iChecksumLo  = 0x7c
	iExtraIsize  = 0x80
	iChecksumHi  = 0x82
	iCtimeExtra  = 0x84
	iMtimeExtra  = 0x88
	iAtimeExtra  = 0x8c
	iCrtime      = 0x90
	iCrtimeExtra = 0x94
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32cLE is the kernel's and e2fsprogs' crc32c_le: no inversion before
// or after, which Go's crc32.Update does.
func crc32cLE(crc uint32, p []byte) uint32 { return ^crc32.Update(^crc, castagnoli, p) }

// ClampExt4Times sets every time of every inode in use of the ext4
// filesystem at offset in the file disk (atime, ctime, mtime, crtime) that
// is later than epoch (seconds since 1970) to epoch, and recomputes the
// inode's metadata_csum checksum. The filesystem must not be mounted. It
// returns the number of inodes changed.
//
// It is the "clamp" of reproducible-builds.org for a filesystem mke2fs -d
// filled from a tree: mke2fs copies each file's atime, mtime and ctime, and
// a tree's ctimes are the time it was extracted. Times are 32 bits plus
// the two epoch bits of the _extra fields (ext4.h, "Extended fields");
// nanoseconds of a clamped time become 0. Errors: not ext4, short reads
// or writes.
func ClampExt4Times(disk string, offset, epoch int64) (int, error) {
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, offset+sbOffset); err != nil {
		return 0, fmt.Errorf("reading the superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[sbMagic:]) != 0xef53 {
		return 0, errors.New("not an ext2/3/4 filesystem (no superblock magic)")
	}
	bs := int64(1024) << le.Uint32(sb[sbLogBlockSize:])
	ipg := int64(le.Uint32(sb[sbInodesPerGroup:]))
	isize := int64(le.Uint16(sb[sbInodeSize:]))
	if isize == 0 {
		isize = 128 // revision 0
	}
	groups := (int64(le.Uint32(sb[sbInodesCount:])) + ipg - 1) / ipg
	incompat, ro := le.Uint32(sb[sbFeatureIncompat:]), le.Uint32(sb[sbFeatureROCompat:])
	descSize := int64(32)
	if incompat&incompat64Bit != 0 {
		descSize = int64(le.Uint16(sb[sbDescSize:]))
	}
	csum := ro&roMetadataCsum != 0
	seed := crc32cLE(^uint32(0), sb[sbUUID:sbUUID+16])
	if incompat&incompatCsumSeed != 0 {
		seed = le.Uint32(sb[sbChecksumSeed:])
	}

	descs := make([]byte, groups*descSize)
	gdt := (int64(le.Uint32(sb[sbFirstDataBlock:])) + 1) * bs
	if _, err := f.ReadAt(descs, offset+gdt); err != nil {
		return 0, fmt.Errorf("reading the group descriptors: %w", err)
	}
	changed := 0
	bitmap := make([]byte, bs)
	table := make([]byte, ipg*isize)
	for g := int64(0); g < groups; g++ {
		d := descs[g*descSize : (g+1)*descSize]
		if le.Uint16(d[bgFlags:])&bgInodeUninit != 0 {
			continue
		}
		bmap, itab := int64(le.Uint32(d[bgInodeBitmapLo:])), int64(le.Uint32(d[bgInodeTableLo:]))
		if descSize >= 64 {
			bmap |= int64(le.Uint32(d[bgInodeBitmapHi:])) << 32
			itab |= int64(le.Uint32(d[bgInodeTableHi:])) << 32
		}
		if _, err := f.ReadAt(bitmap, offset+bmap*bs); err != nil {
			return changed, fmt.Errorf("group %d: reading the inode bitmap: %w", g, err)
		}
		if _, err := f.ReadAt(table, offset+itab*bs); err != nil {
			return changed, fmt.Errorf("group %d: reading the inode table: %w", g, err)
		}
		dirty := false
		for i := int64(0); i < ipg; i++ {
			if bitmap[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			ino := table[i*isize : (i+1)*isize]
			if !clampInode(ino, epoch) {
				continue
			}
			if csum {
				setInodeChecksum(ino, uint32(g*ipg+i+1), seed)
			}
			dirty = true
			changed++
		}
		if dirty {
			if _, err := f.WriteAt(table, offset+itab*bs); err != nil {
				return changed, fmt.Errorf("group %d: writing the inode table: %w", g, err)
			}
		}
	}
	return changed, f.Sync()
}

// clampInode clamps the times of one inode; it reports a change.
func clampInode(ino []byte, epoch int64) bool {
	le := binary.LittleEndian
	extra := 0
	if len(ino) > iExtraIsize+2 {
		extra = int(le.Uint16(ino[iExtraIsize:]))
	}
	// has says whether the field at off lies within i_extra_isize.
	has := func(off int) bool { return off+4 <= iExtraIsize+extra && off+4 <= len(ino) }
	changed := false
	for _, t := range [][2]int{{iAtime, iAtimeExtra}, {iCtime, iCtimeExtra}, {iMtime, iMtimeExtra}, {iCrtime, iCrtimeExtra}} {
		if t[0] >= iExtraIsize && !has(t[0]) {
			continue
		}
		sec := int64(int32(le.Uint32(ino[t[0]:])))
		var x uint32
		if has(t[1]) {
			x = le.Uint32(ino[t[1]:])
			sec += int64(x&3) << 32
		}
		if sec < epoch || sec == epoch && x>>2 == 0 {
			continue
		}
		le.PutUint32(ino[t[0]:], uint32(epoch))
		if has(t[1]) {
			le.PutUint32(ino[t[1]:], uint32((epoch-int64(int32(uint32(epoch))))>>32)&3)
		}
		changed = true
	}
	return changed
}

// setInodeChecksum stores the metadata_csum checksum of an inode:
// crc32c of the inode number, its generation and the inode with its
// checksum fields zeroed, seeded with the filesystem's (e2fsprogs
// lib/ext2fs/csum.c, ext2fs_inode_csum).
func setInodeChecksum(ino []byte, n, seed uint32) {
	le := binary.LittleEndian
	hi := len(ino) > 128 && le.Uint16(ino[iExtraIsize:]) >= 4
	le.PutUint16(ino[iChecksumLo:], 0)
	if hi {
		le.PutUint16(ino[iChecksumHi:], 0)
	}
	var b [4]byte
	le.PutUint32(b[:], n)
	c := crc32cLE(seed, b[:])
	c = crc32cLE(c, ino[iGeneration:iGeneration+4])
	c = crc32cLE(c, ino)
	le.PutUint16(ino[iChecksumLo:], uint16(c))
	if hi {
		le.PutUint16(ino[iChecksumHi:], uint16(c>>16))
	}
}
