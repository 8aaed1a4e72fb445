package ext4repro

import "encoding/binary"

// journal empties the internal jbd2 journal of a cleanly unmounted
// filesystem: every block after the journal superblock is zeroed, and the
// superblock gets a derived sequence and the head a freshly made journal
// has (journal.rst "Super Block"). The kernel starts its next transaction
// at s_sequence+1 on an empty journal (jbd2_journal_recover), so any value
// is valid once the old transactions are gone.
func (fs *filesystem) journal(rep *Report) error {
	if le32(fs.sb, sbFeatureCompat)&compatHasJournal == 0 {
		return nil
	}
	jino := le32(fs.sb, sbJournalInum)
	raw, err := fs.readInode(jino)
	if err != nil {
		return err
	}
	if le32(raw, inFlags)&flagExtents == 0 {
		return fs.errorf(ErrUnsupported, "a block-mapped journal (inode %d)", jino)
	}
	type run struct {
		logical uint32
		phys    int64
		n       int
	}
	var runs []run
	if err := fs.walkExtents(raw[inBlock:inBlock+60], false, 0, -1, func(l uint32, p int64, n int) error {
		runs = append(runs, run{l, p, n})
		return nil
	}); err != nil {
		return err
	}
	var sbBlk int64 = -1
	for _, r := range runs {
		if r.logical == 0 {
			sbBlk = r.phys
		}
	}
	if sbBlk < 0 {
		return fs.errorf(ErrNotExt4, "journal inode %d has no block 0", jino)
	}
	jsb, err := fs.read(sbBlk*fs.bs, jSbSize)
	if err != nil {
		return err
	}
	be := binary.BigEndian
	bt := be.Uint32(jsb[jSbBlocktype:])
	if be.Uint32(jsb) != jMagic || (bt != jSuperblockV1 && bt != jSuperblockV2) {
		return fs.errorf(ErrNotExt4, "no jbd2 superblock in journal inode %d", jino)
	}
	if be.Uint32(jsb[jSbStart:]) != 0 {
		return fs.errorf(ErrUnclean, "the journal holds transactions to replay; mount and unmount it, or run e2fsck")
	}
	for _, r := range runs {
		from, n := r.phys, int64(r.n)
		if r.logical == 0 {
			from, n = from+1, n-1
		}
		if err := fs.zero(from*fs.bs, n*fs.bs); err != nil {
			return err
		}
		rep.JournalBytes += n * fs.bs
	}
	be.PutUint32(jsb[jSbSequence:], fs.src.Uint32("ext4/"+fs.uuid+"/journal-sequence"))
	if bt == jSuperblockV2 {
		be.PutUint32(jsb[jSbHead:], 0)
		if be.Uint32(jsb[jSbIncompat:])&(jIncCsumV2|jIncCsumV3) != 0 {
			be.PutUint32(jsb[jSbChecksum:], 0)
			be.PutUint32(jsb[jSbChecksum:], crc32c(^uint32(0), jsb))
		}
	}
	return fs.write(sbBlk*fs.bs, jsb)
}

// readInode returns inode ino's raw bytes.
func (fs *filesystem) readInode(ino uint32) ([]byte, error) {
	g, i := int64(ino-1)/fs.ipg, int64(ino-1)%fs.ipg
	if g >= fs.groups {
		return nil, fs.errorf(ErrNotExt4, "inode %d beyond the last group", ino)
	}
	return fs.read(fs.gdField(g, gdInodeTableLo, gdInodeTableHi)*fs.bs+i*fs.inodeSize, fs.inodeSize)
}
