package ext4repro

import (
	"encoding/binary"
	"hash/crc32"
)

// Offsets and flags of the ext4 on-disk format, from the kernel's
// Documentation/filesystems/ext4 (the "Data Structures and Algorithms"
// chapters: super.rst, group_descr.rst, inodes.rst, ifork.rst,
// directory.rst, journal.rst) and fs/ext4/ext4.h.
const (
	sbOffset = 1024
	sbSize   = 1024

	sbInodesCount     = 0x00
	sbBlocksCountLo   = 0x04
	sbFirstDataBlock  = 0x14
	sbLogBlockSize    = 0x18
	sbBlocksPerGroup  = 0x20
	sbInodesPerGroup  = 0x28
	sbMtime           = 0x2C
	sbWtime           = 0x30
	sbMntCount        = 0x34
	sbMagic           = 0x38
	sbState           = 0x3A
	sbLastcheck       = 0x40
	sbRevLevel        = 0x4C
	sbFirstIno        = 0x54
	sbInodeSize       = 0x58
	sbFeatureCompat   = 0x5C
	sbFeatureIncompat = 0x60
	sbFeatureRoCompat = 0x64
	sbUUID            = 0x68
	sbLastMounted     = 0x88
	sbJournalInum     = 0xE0
	sbDescSize        = 0xFE
	sbFirstMetaBg     = 0x104
	sbBlocksCountHi   = 0x150
	sbKbytesWritten   = 0x178
	sbFirstErrorTime  = 0x198
	sbLastErrorTime   = 0x1CC
	sbChecksumSeed    = 0x270
	sbWtimeHi         = 0x274
	sbMtimeHi         = 0x275
	sbLastcheckHi     = 0x277
	sbFirstErrTimeHi  = 0x278
	sbLastErrTimeHi   = 0x279
	sbOrphanFileInum  = 0x280
	sbChecksum        = 0x3FC

	ext4Magic = 0xEF53

	compatHasJournal    = 0x4
	compatOrphanFile    = 0x1000
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBg      = 0x10
	incompat64Bit       = 0x80
	incompatCsumSeed    = 0x2000
	incompatInlineData  = 0x8000
	roCompatSparseSuper = 0x1
	roCompatGdtCsum     = 0x10
	roCompatBigalloc    = 0x200
	roCompatMetaCsum    = 0x400

	stateValid = 0x1

	// group descriptor
	gdBlockBitmapLo = 0x00
	gdInodeBitmapLo = 0x04
	gdInodeTableLo  = 0x08
	gdFlags         = 0x12
	gdItableUnused  = 0x1C
	gdBlockBitmapHi = 0x20
	gdInodeBitmapHi = 0x24
	gdInodeTableHi  = 0x28
	gdItableUnusHi  = 0x32

	bgInodeUninit = 0x1
	bgBlockUninit = 0x2

	// inode
	inMode        = 0x00
	inAtime       = 0x08
	inCtime       = 0x0C
	inMtime       = 0x10
	inDtime       = 0x14
	inLinks       = 0x1A
	inFlags       = 0x20
	inVersionLo   = 0x24
	inVersionHi   = 0x98
	inBlock       = 0x28
	inGeneration  = 0x64
	inChecksumLo  = 0x7C
	inExtraIsize  = 0x80
	inChecksumHi  = 0x82
	inCtimeExtra  = 0x84
	inMtimeExtra  = 0x88
	inAtimeExtra  = 0x8C
	inCrtime      = 0x90
	inCrtimeExtra = 0x94
	goodOldInode  = 128

	flagIndex   = 0x1000
	flagExtents = 0x80000
	modeDir     = 0x4000
	modeFmt     = 0xF000

	extentMagic = 0xF30A

	// jbd2 (big-endian)
	jMagic        = 0xC03B3998
	jSbBlocktype  = 0x04
	jSbMaxlen     = 0x10
	jSbFirst      = 0x14
	jSbSequence   = 0x18
	jSbStart      = 0x1C
	jSbIncompat   = 0x28
	jSbHead       = 0x58
	jSbChecksum   = 0xFC
	jSbSize       = 1024
	jIncCsumV2    = 0x8
	jIncCsumV3    = 0x10
	jSuperblockV1 = 3
	jSuperblockV2 = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c_le as ext4_chksum and jbd2_chksum use it:
// no inversion on the way in or out (hash/crc32 inverts both).
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

func le16(b []byte, off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func put16(b []byte, off int, v uint16) {
	binary.LittleEndian.PutUint16(b[off:], v)
}
func put32(b []byte, off int, v uint32) {
	binary.LittleEndian.PutUint32(b[off:], v)
}
func le32b(v uint32) []byte {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return b[:]
}
