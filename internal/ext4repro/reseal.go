package ext4repro

import (
	"bytes"
	"encoding/binary"
	"sort"
)

// reseal rewrites the checksums seeded by the inode's generation: its
// extent tree blocks (ext4_extent_tail) and, for a directory, its leaf
// blocks (ext4_dir_entry_tail) and htree nodes (dx_tail), as directory.rst
// and ifork.rst lay them out. With slack, a directory's blocks also lose
// their entries packed and sorted (packDirBlock).
func (fs *filesystem) reseal(ino uint32, raw []byte, slack bool) error {
	isDir := le16(raw, inMode)&modeFmt == modeDir
	if le32(raw, inFlags)&flagExtents == 0 {
		if isDir && fs.csum && le32(fs.sb, sbFeatureIncompat)&incompatInlineData == 0 {
			return fs.errorf(ErrUnsupported, "inode %d: a block-mapped directory created after the epoch", ino)
		}
		return nil // fast symlink, inline data, or block-mapped: no checksum seeded by the inode (its slack stays)
	}
	seed := fs.inodeSeed(ino, raw)
	index := le32(raw, inFlags)&flagIndex != 0
	return fs.walkExtents(raw[inBlock:inBlock+60], fs.csum, seed, -1, func(logical uint32, phys int64, n int) error {
		if !isDir {
			return nil
		}
		for i := 0; i < n; i++ {
			if err := fs.resealDirBlock(seed, phys+int64(i), index, logical+uint32(i) == 0, slack); err != nil {
				return err
			}
		}
		return nil
	})
}

// walkExtents calls leaf for each initialized extent of the tree in node;
// node is the inode's i_block (blk < 0) or tree block blk. With seal, it
// rewrites the tail checksum of every tree block below the inode.
func (fs *filesystem) walkExtents(node []byte, seal bool, seed uint32, blk int64, leaf func(logical uint32, phys int64, n int) error) error {
	if le16(node, 0) != extentMagic {
		return nil
	}
	entries, max, depth := int(le16(node, 2)), int(le16(node, 4)), le16(node, 6)
	if 12+12*entries > len(node) {
		return nil
	}
	for i := 0; i < entries; i++ {
		e := node[12+12*i:]
		if depth == 0 {
			n := int(le16(e, 4))
			if n > 32768 { // uninitialized extent: reads as zeros, no directory data
				continue
			}
			phys := int64(le16(e, 6))<<32 | int64(le32(e, 8))
			if err := leaf(le32(e, 0), phys, n); err != nil {
				return err
			}
			continue
		}
		child := int64(le16(e, 8))<<32 | int64(le32(e, 4))
		b, err := fs.read(child*fs.bs, fs.bs)
		if err != nil {
			return err
		}
		if err := fs.walkExtents(b, seal, seed, child, leaf); err != nil {
			return err
		}
	}
	tail := 12 + 12*max
	if !seal || blk < 0 || tail+4 > len(node) {
		return nil
	}
	clearExtentSlack(node)
	binary.LittleEndian.PutUint32(node[tail:], crc32c(seed, node[:tail]))
	return fs.write(blk*fs.bs, node)
}

// resealDirBlock rewrites the checksum of one directory block in place.
func (fs *filesystem) resealDirBlock(seed uint32, blk int64, index, first, slack bool) error {
	b, err := fs.read(blk*fs.bs, fs.bs)
	if err != nil {
		return err
	}
	orig := bytes.Clone(b)
	bs := int(fs.bs)
	t := b[bs-12:]
	// An htree node first: it keeps the leaf tail's marker bytes of the
	// block it was made from under its dx_tail (ext4 make_indexed_dir).
	switch {
	case index && first:
		if !fs.resealDx(seed, b, 0x18+int(b[0x18+5])) {
			return nil
		}
	case index && le32(b, 0) == 0 && int(le16(b, 4)) == bs:
		if !fs.resealDx(seed, b, 8) {
			return nil
		}
	case le32(t, 0) == 0 && le16(t, 4) == 12 && t[6] == 0 && t[7] == 0xDE:
		if slack {
			packDirBlock(b[:bs-12], first)
		}
		if fs.csum {
			put32(t, 8, crc32c(seed, b[:bs-12]))
		}
	case !fs.csum:
		if !slack || !packDirBlock(b, first) {
			return nil
		}
	default:
		return nil
	}
	// A block already packed and sealed (every directory mke2fs -d made,
	// clamped after it: 800 blocks of the example's tree) is not written.
	if bytes.Equal(b, orig) {
		return nil
	}
	return fs.write(blk*fs.bs, b)
}

// resealDx sets an htree node's dx_tail checksum: crc32c over the node up
// to its last used dx_entry, then the tail's reserved word and a zero
// checksum (ext4_dx_csum).
func (fs *filesystem) resealDx(seed uint32, b []byte, countOff int) bool {
	if countOff+4 > len(b) {
		return false
	}
	limit, count := int(le16(b, countOff)), int(le16(b, countOff+2))
	tail := countOff + 8*limit
	if count > limit || tail+8 > len(b) {
		return false
	}
	clear(b[countOff+8*count : tail])
	if !fs.csum {
		return true
	}
	c := crc32c(seed, b[:countOff+8*count])
	c = crc32c(c, b[tail:tail+4])
	c = crc32c(c, []byte{0, 0, 0, 0})
	put32(b, tail+4, c)
	return true
}

// packDirBlock rewrites a linear directory block (or an htree leaf) with
// its live entries packed from its start, sorted by name ("." and ".."
// first in a directory's first block), and nothing of the deleted ones: the
// kernel puts a new entry in the first hole large enough, so where entries
// sit follows the lengths of names that no longer exist (Packer's
// /tmp/script_N.sh has 1 to 4 digits). Readdir order is not a promise of
// the filesystem; e2fsck -D reorders the same way. Reports whether it
// recognised the block; it leaves a block it cannot walk as it is.
func packDirBlock(b []byte, first bool) bool {
	type entry struct {
		ino  uint32
		ft   byte
		name []byte
	}
	var es []entry
	for off := 0; off < len(b); {
		if off+8 > len(b) {
			return false
		}
		rec, nl := int(le16(b, off+4)), int(b[off+6])
		if rec < 8 || off+rec > len(b) || rec%4 != 0 || 8+nl > rec {
			return false
		}
		if ino := le32(b, off); ino != 0 {
			es = append(es, entry{ino, b[off+7], append([]byte(nil), b[off+8:off+8+nl]...)})
		}
		off += rec
	}
	keep := 0
	if first {
		if len(es) < 2 || string(es[0].name) != "." || string(es[1].name) != ".." {
			return false
		}
		keep = 2
	}
	sort.SliceStable(es[keep:], func(i, j int) bool { return bytes.Compare(es[keep+i].name, es[keep+j].name) < 0 })
	out := make([]byte, len(b))
	off, last := 0, -1
	for _, e := range es {
		size := (8 + len(e.name) + 3) &^ 3
		if off+size > len(out) {
			return false
		}
		put32(out, off, e.ino)
		put16(out, off+4, uint16(size))
		out[off+6], out[off+7] = byte(len(e.name)), e.ft
		copy(out[off+8:], e.name)
		last, off = off, off+size
	}
	if last < 0 {
		last = 0 // no live entry: one unused entry spans the block
	}
	put16(out, last+4, uint16(len(out)-last))
	copy(b, out)
	return true
}
