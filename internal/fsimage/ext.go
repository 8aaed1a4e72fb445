package fsimage

import (
	"encoding/binary"
	"fmt"
)

// The ext2/3/4 superblock: 1024 bytes at byte 1024, little-endian (the
// kernel's Documentation/filesystems/ext4/super.rst; e2fsprogs'
// lib/ext2fs/ext2_fs.h). Offsets are within the superblock.
const (
	extSuperOffset   = 1024
	extMagic         = 0xEF53
	extOffBlocksLo   = 0x04
	extOffLogBlock   = 0x18
	extOffMagic      = 0x38
	extOffCompat     = 0x5C
	extOffIncompat   = 0x60
	extOffROCompat   = 0x64
	extOffUUID       = 0x68
	extOffLabel      = 0x78
	extOffBlocksHi   = 0x150
	extCompatJournal = 0x4
)

// ext incompat features (s_feature_incompat).
const (
	extIncompatCompression = 0x1
	extIncompatFiletype    = 0x2
	extIncompatRecover     = 0x4
	extIncompatJournalDev  = 0x8
	extIncompatMetaBG      = 0x10
	extIncompat64Bit       = 0x80
	extIncompatDirData     = 0x1000
)

var extIncompatNames = map[uint32]string{
	0x1: "compression", 0x2: "filetype", 0x4: "needs_recovery", 0x8: "journal_dev",
	0x10: "meta_bg", 0x40: "extent", 0x80: "64bit", 0x100: "mmp", 0x200: "flex_bg",
	0x400: "ea_inode", 0x1000: "dirdata", 0x2000: "metadata_csum_seed", 0x4000: "large_dir",
	0x8000: "inline_data", 0x10000: "encrypt", 0x20000: "casefold",
}

// extIncompatReadable is what Linux mounts (EXT4_FEATURE_INCOMPAT_SUPP in
// fs/ext4/ext4.h): every named feature but compression (never finished),
// journal_dev (the file is an external journal, not a filesystem) and
// dirdata (Lustre's).
const extIncompatReadable = 0x3ffff &^ (extIncompatCompression | extIncompatJournalDev | extIncompatDirData | 0x20 | 0x800)

// ext3's feature sets (EXT3_FEATURE_*_SUPP in e2fsprogs): a journalled
// filesystem with more than these is ext4, as blkid calls it.
const (
	ext3Incompat = extIncompatFiletype | extIncompatRecover | extIncompatMetaBG
	ext3ROCompat = 0x1 | 0x2 | 0x4 // sparse_super, large_file, btree_dir
)

func isExt(head []byte) bool {
	return len(head) >= extSuperOffset+1024 &&
		binary.LittleEndian.Uint16(head[extSuperOffset+extOffMagic:]) == extMagic
}

func probeExt(head []byte) (Info, error) {
	sb := head[extSuperOffset : extSuperOffset+1024]
	u32 := func(off int) uint32 { return binary.LittleEndian.Uint32(sb[off:]) }
	compat, incompat, rocompat := u32(extOffCompat), u32(extOffIncompat), u32(extOffROCompat)
	if incompat&extIncompatJournalDev != 0 {
		return Info{}, fmt.Errorf("%w: it is an ext journal device (journal_dev), not a filesystem", ErrUnsupported)
	}
	if bad := incompat &^ extIncompatReadable; bad != 0 {
		return Info{}, fmt.Errorf("%w: ext incompatible features %s, which Linux cannot mount", ErrUnsupported, featureNames(bad, extIncompatNames))
	}
	t := Ext2
	newer := incompat&^ext3Incompat != 0 || rocompat&^ext3ROCompat != 0
	switch {
	case newer:
		t = Ext4
	case compat&extCompatJournal != 0:
		t = Ext3
	}
	blocks := int64(u32(extOffBlocksLo))
	if incompat&extIncompat64Bit != 0 {
		blocks |= int64(u32(extOffBlocksHi)) << 32
	}
	return Info{
		Type:    t,
		UUID:    formatUUID(sb[extOffUUID : extOffUUID+16]),
		Label:   cString(sb[extOffLabel : extOffLabel+16]),
		Size:    blocks * (1024 << u32(extOffLogBlock)),
		Unclean: incompat&extIncompatRecover != 0,
	}, nil
}
