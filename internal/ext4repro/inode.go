package ext4repro

// inodes walks the used part of every inode table: in-use inodes get their
// times clamped and, when created after the epoch, a derived generation;
// unused inodes the kernel wrote after the epoch are zeroed.
func (fs *filesystem) inodes(rep *Report) error {
	firstIno := uint32(11)
	if le32(fs.sb, sbRevLevel) > 0 {
		firstIno = le32(fs.sb, sbFirstIno)
	}
	// The orphan file's blocks carry checksums seeded by its generation
	// (ext4_orphan_file_block_csum): it keeps the one mke2fs gave it.
	var orphanIno uint32
	if le32(fs.sb, sbFeatureCompat)&compatOrphanFile != 0 {
		orphanIno = le32(fs.sb, sbOrphanFileInum)
	}
	gdtCsum := fs.csum || le32(fs.sb, sbFeatureRoCompat)&roCompatGdtCsum != 0
	for g := int64(0); g < fs.groups; g++ {
		flags := le16(fs.gd[g], gdFlags)
		if gdtCsum && flags&bgInodeUninit != 0 {
			continue
		}
		used := fs.ipg
		if gdtCsum {
			unused := int64(le16(fs.gd[g], gdItableUnused))
			if fs.descSize >= 64 {
				unused |= int64(le16(fs.gd[g], gdItableUnusHi)) << 16
			}
			used -= unused
		}
		if used <= 0 {
			continue
		}
		bm, err := fs.read(fs.gdField(g, gdInodeBitmapLo, gdInodeBitmapHi)*fs.bs, fs.bs)
		if err != nil {
			return err
		}
		tableOff := fs.gdField(g, gdInodeTableLo, gdInodeTableHi) * fs.bs
		table, err := fs.read(tableOff, used*fs.inodeSize)
		if err != nil {
			return err
		}
		lo, hi := used, int64(0) // the inodes changed
		for i := int64(0); i < used; i++ {
			raw := table[i*fs.inodeSize : (i+1)*fs.inodeSize]
			ino := uint32(g*fs.ipg + i + 1)
			inUse := bm[i/8]&(1<<(i%8)) != 0
			changed := false
			if !inUse {
				if fs.laterThanEpoch(raw) {
					clear(raw)
					rep.ClearedInodes++
					changed = true
				}
			} else if fs.clampOnly {
				if changed = fs.clampTimes(raw); changed {
					if fs.csum {
						fs.inodeChecksum(ino, raw)
					}
					rep.Inodes++
				}
			} else {
				created := fs.createdAfterEpoch(raw)
				touched := fs.laterThanEpoch(raw)
				dirMtime := fs.timeAfter(raw, inMtime, inMtimeExtra)
				changed = fs.clampTimes(raw)
				if touched && clearExtentSlack(raw[inBlock:inBlock+60]) {
					changed = true
				}
				if touched && fs.resetVersion(raw) {
					changed = true
				}
				genChanged := false
				if created && ino >= firstIno && ino != orphanIno {
					gen := fs.src.Uint32(fs.purpose("generation", ino))
					if le32(raw, inGeneration) != gen {
						put32(raw, inGeneration, gen)
						rep.Generations++
						changed, genChanged = true, true
					}
				}
				// A directory changed after the epoch has its entries where
				// names since deleted left room (packDirBlock).
				dirChanged := le16(raw, inMode)&modeFmt == modeDir && dirMtime
				if genChanged && fs.csum || dirChanged {
					if err := fs.reseal(ino, raw, dirChanged); err != nil {
						return err
					}
				}
				if changed {
					if fs.csum {
						fs.inodeChecksum(ino, raw)
					}
					rep.Inodes++
				}
			}
			if changed {
				lo, hi = min(lo, i), max(hi, i+1)
			}
		}
		// One write per group: a base image newer than the epoch has
		// every inode clamped.
		if lo < hi {
			if err := fs.write(tableOff+lo*fs.inodeSize, table[lo*fs.inodeSize:hi*fs.inodeSize]); err != nil {
				return err
			}
		}
	}
	return nil
}

// fits reports whether the inode's extra part holds a field of n bytes at
// offset off.
func (fs *filesystem) fits(raw []byte, off, n int) bool {
	return fs.inodeSize > goodOldInode && off+n <= goodOldInode+int(le16(raw, inExtraIsize)) && off+n <= int(fs.inodeSize)
}

// timeFields: each inode time and its _extra (epoch bits and nanoseconds),
// inodes.rst "Inode Timestamps".
var timeFields = []struct{ lo, extra int }{
	{inAtime, inAtimeExtra}, {inCtime, inCtimeExtra}, {inMtime, inMtimeExtra}, {inCrtime, inCrtimeExtra},
}

// inodeTime decodes a time as seconds and nanoseconds; ok is false when the
// inode has no room for the field.
func (fs *filesystem) inodeTime(raw []byte, lo, extra int) (sec int64, nsec uint32, ok bool) {
	if lo >= goodOldInode && !fs.fits(raw, lo, 4) {
		return 0, 0, false
	}
	sec = int64(int32(le32(raw, lo)))
	if fs.fits(raw, extra, 4) {
		e := le32(raw, extra)
		sec += int64(e&3) << 32
		nsec = e >> 2
	}
	return sec, nsec, true
}

func (fs *filesystem) after(sec int64, nsec uint32) bool {
	return sec > fs.epoch || sec == fs.epoch && nsec > 0
}

// clampTimes sets each time later than the epoch to the epoch, with no
// nanoseconds (ext4_encode_extra_time).
func (fs *filesystem) clampTimes(raw []byte) bool {
	changed := false
	for _, t := range timeFields {
		sec, nsec, ok := fs.inodeTime(raw, t.lo, t.extra)
		if !ok || !fs.after(sec, nsec) {
			continue
		}
		put32(raw, t.lo, uint32(fs.epoch))
		if fs.fits(raw, t.extra, 4) {
			put32(raw, t.extra, uint32((fs.epoch-int64(int32(uint32(fs.epoch))))>>32)&3)
		}
		changed = true
	}
	return changed
}

// createdAfterEpoch: crtime later than the epoch, or, on inodes without a
// crtime, ctime (which is never earlier than the creation).
func (fs *filesystem) createdAfterEpoch(raw []byte) bool {
	if sec, nsec, ok := fs.inodeTime(raw, inCrtime, inCrtimeExtra); ok {
		return fs.after(sec, nsec)
	}
	sec, nsec, _ := fs.inodeTime(raw, inCtime, inCtimeExtra)
	return fs.after(sec, nsec)
}

// laterThanEpoch: any time of the inode, or its deletion time, is later than
// the epoch (an unused inode the kernel wrote during the build).
func (fs *filesystem) laterThanEpoch(raw []byte) bool {
	if int64(le32(raw, inDtime)) > fs.epoch {
		return true
	}
	for _, t := range timeFields {
		if sec, nsec, ok := fs.inodeTime(raw, t.lo, t.extra); ok && fs.after(sec, nsec) {
			return true
		}
	}
	return false
}

// inodeSeed is the crc32c seed of every checksum that belongs to an inode:
// the filesystem seed, then the inode number and generation (ext4_iget).
func (fs *filesystem) inodeSeed(ino uint32, raw []byte) uint32 {
	c := crc32c(fs.seed, le32b(ino))
	return crc32c(c, raw[inGeneration:inGeneration+4])
}

// inodeChecksum sets i_checksum_lo/hi: crc32c of the inode seed and the
// whole inode with both checksum fields zeroed (ext4_inode_csum).
func (fs *filesystem) inodeChecksum(ino uint32, raw []byte) {
	hi := fs.fits(raw, inChecksumHi, 2)
	put16(raw, inChecksumLo, 0)
	if hi {
		put16(raw, inChecksumHi, 0)
	}
	c := crc32c(fs.inodeSeed(ino, raw), raw)
	put16(raw, inChecksumLo, uint16(c))
	if hi {
		put16(raw, inChecksumHi, uint16(c>>16))
	}
}

// clearExtentSlack zeroes the unused entries of an extent node: the kernel
// leaves there what the node held before it split or shrank, which follows
// when writeback ran. Reports whether a byte changed.
func clearExtentSlack(node []byte) bool {
	if le16(node, 0) != extentMagic {
		return false
	}
	used, max := 12+12*int(le16(node, 2)), 12+12*int(le16(node, 4))
	if used >= max || max > len(node) {
		return false
	}
	changed := false
	for i := used; i < max; i++ {
		if node[i] != 0 {
			node[i], changed = 0, true
		}
	}
	return changed
}

// resetVersion sets the change counter (i_version, for NFS and IMA) of an
// inode written after the epoch to 1: the kernel counts a change only when
// someone looked at the counter since the last one (inode_maybe_inc_iversion),
// so its value follows who happened to look.
func (fs *filesystem) resetVersion(raw []byte) bool {
	changed := le32(raw, inVersionLo) != 1
	put32(raw, inVersionLo, 1)
	if fs.fits(raw, inVersionHi, 4) && le32(raw, inVersionHi) != 0 {
		put32(raw, inVersionHi, 0)
		changed = true
	}
	return changed
}

func (fs *filesystem) timeAfter(raw []byte, lo, extra int) bool {
	sec, nsec, ok := fs.inodeTime(raw, lo, extra)
	return ok && fs.after(sec, nsec)
}
