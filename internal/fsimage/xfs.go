package fsimage

import (
	"encoding/binary"
	"fmt"
)

// The xfs superblock: sector 0, big-endian (struct xfs_dsb in
// libxfs/xfs_format.h; "XFS Algorithms & Data Structures", Superblocks).
const (
	xfsOffBlockSize  = 4
	xfsOffDBlocks    = 8
	xfsOffUUID       = 32
	xfsOffLogStart   = 48
	xfsOffVersion    = 100
	xfsOffLabel      = 108
	xfsOffIncompat   = 216
	xfsVersionMask   = 0x000f
	xfsNeedsRepair   = 1 << 4
	xfsIncompatKnown = 1<<9 - 1 // ftype ... metadir
)

var xfsIncompatNames = map[uint32]string{
	1 << 0: "ftype", 1 << 1: "sparse inodes", 1 << 2: "meta_uuid", 1 << 3: "bigtime",
	1 << 4: "needsrepair", 1 << 5: "nrext64", 1 << 6: "exchange", 1 << 7: "parent", 1 << 8: "metadir",
}

func isXFS(head []byte) bool { return len(head) >= 512 && string(head[:4]) == "XFSB" }

func probeXFS(head []byte) (Info, error) {
	u16 := func(off int) uint16 { return binary.BigEndian.Uint16(head[off:]) }
	u32 := func(off int) uint32 { return binary.BigEndian.Uint32(head[off:]) }
	u64 := func(off int) uint64 { return binary.BigEndian.Uint64(head[off:]) }
	switch v := u16(xfsOffVersion) & xfsVersionMask; v {
	case 4, 5:
		if v == 5 {
			incompat := u32(xfsOffIncompat)
			if incompat&xfsNeedsRepair != 0 {
				return Info{}, fmt.Errorf("%w: the xfs filesystem is marked needsrepair: run xfs_repair on a copy of it first", ErrUnsupported)
			}
			if bad := incompat &^ xfsIncompatKnown; bad != 0 {
				return Info{}, fmt.Errorf("%w: xfs incompatible features %s", ErrUnsupported, featureNames(bad, xfsIncompatNames))
			}
		}
	default:
		return Info{}, fmt.Errorf("%w: xfs superblock version %d", ErrUnsupported, v)
	}
	if u64(xfsOffLogStart) == 0 {
		return Info{}, fmt.Errorf("%w: the xfs log is on a separate device (an external log), which a single image file cannot give", ErrUnsupported)
	}
	return Info{
		Type:  XFS,
		UUID:  formatUUID(head[xfsOffUUID : xfsOffUUID+16]),
		Label: cString(head[xfsOffLabel : xfsOffLabel+12]),
		Size:  int64(u64(xfsOffDBlocks)) * int64(u32(xfsOffBlockSize)),
	}, nil
}
