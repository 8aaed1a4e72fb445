package bootloader

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"
)

// Offsets of a FAT32 boot sector and directory entry (Microsoft's FAT
// specification, "FAT: General Overview of On-Disk Format", 2004,
// sections 3.1, 3.3 and 6).
const (
	bsBytesPerSec = 11
	bsSecPerClus  = 13
	bsRsvdSecCnt  = 14
	bsNumFATs     = 16
	bsFATSz32     = 36
	bsRootClus    = 44
	bsBkBootSec   = 50
	bsVolID       = 67

	dirAttr     = 11
	dirCrtTenth = 13
	dirCrtTime  = 14
	dirCrtDate  = 16
	dirAccDate  = 18
	dirWrtTime  = 22
	dirWrtDate  = 24
	attrLFN     = 0x0f
	attrDir     = 0x10
)

// stampFAT gives the FAT32 filesystem at start of f the volume ID id (in
// the boot sector and its backup) and t as the creation, access and
// write time of every directory entry, the volume label's included; FAT
// keeps local times of 2-second resolution from 1980 on, so t is taken
// in UTC and a t before 1980 becomes 1980-01-01. What it does is what
// mkfs.fat --invariant and SOURCE_DATE_EPOCH do for mtools, for a FAT made
// by go-diskfs, which takes its volume ID and entry times from the clock.
func stampFAT(f *os.File, start int64, id uint32, t time.Time) error {
	bs := make([]byte, sector)
	if _, err := f.ReadAt(bs, start); err != nil {
		return err
	}
	le := binary.LittleEndian
	if le.Uint16(bs[bsBytesPerSec:]) != sector || bs[510] != 0x55 || bs[511] != 0xaa {
		return fmt.Errorf("no FAT32 boot sector of %d-byte sectors", sector)
	}
	for _, s := range []int64{0, int64(le.Uint16(bs[bsBkBootSec:]))} {
		var b [4]byte
		le.PutUint32(b[:], id)
		if _, err := f.WriteAt(b[:], start+s*sector+bsVolID); err != nil {
			return err
		}
	}
	spc := int64(bs[bsSecPerClus])
	fat := start + int64(le.Uint16(bs[bsRsvdSecCnt:]))*sector
	data := fat + int64(bs[bsNumFATs])*int64(le.Uint32(bs[bsFATSz32:]))*sector
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	date := uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	clock := uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	tenth := byte(t.Second() % 2 * 100) // the odd second, in hundredths

	// next follows the FAT chain; 0 ends it.
	next := func(c uint32) (uint32, error) {
		var b [4]byte
		if _, err := f.ReadAt(b[:], fat+int64(c)*4); err != nil {
			return 0, err
		}
		n := le.Uint32(b[:]) & 0x0fffffff
		if n < 2 || n >= 0x0ffffff8 {
			return 0, nil
		}
		return n, nil
	}
	var walk func(c uint32, depth int) error
	walk = func(c uint32, depth int) error {
		if depth > 32 {
			return fmt.Errorf("directories nested deeper than 32")
		}
		for seen := 0; c != 0; seen++ {
			if seen > 1<<16 {
				return fmt.Errorf("a directory's cluster chain loops")
			}
			buf := make([]byte, spc*sector)
			at := data + int64(c-2)*spc*sector
			if _, err := f.ReadAt(buf, at); err != nil {
				return err
			}
			var subdirs []uint32
			for i := 0; i+32 <= len(buf); i += 32 {
				e := buf[i : i+32]
				if e[0] == 0 {
					break
				}
				if e[0] == 0xe5 || e[dirAttr]&0x3f == attrLFN {
					continue
				}
				e[dirCrtTenth] = tenth
				le.PutUint16(e[dirCrtTime:], clock)
				le.PutUint16(e[dirCrtDate:], date)
				le.PutUint16(e[dirAccDate:], date)
				le.PutUint16(e[dirWrtTime:], clock)
				le.PutUint16(e[dirWrtDate:], date)
				if e[dirAttr]&attrDir != 0 && e[0] != '.' {
					subdirs = append(subdirs, uint32(le.Uint16(e[20:]))<<16|uint32(le.Uint16(e[26:])))
				}
			}
			if _, err := f.WriteAt(buf, at); err != nil {
				return err
			}
			for _, d := range subdirs {
				if err := walk(d, depth+1); err != nil {
					return err
				}
			}
			var err error
			if c, err = next(c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(le.Uint32(bs[bsRootClus:]), 0)
}
