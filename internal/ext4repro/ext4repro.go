// Package ext4repro makes an ext4 filesystem that the kernel has written
// (mounted, changed, cleanly unmounted) byte-for-byte reproducible, offline:
// what the kernel took from the clock or from chance is replaced by values
// derived from a repro.Source.
//
// Normalize, on one unmounted ext4 filesystem:
//   - clamps every inode time (atime, ctime, mtime, crtime, with their
//     nanoseconds) later than the epoch to the epoch;
//   - gives every inode created after the epoch (crtime, or ctime without
//     crtime, later than the epoch) an i_generation derived from the Source,
//     the filesystem UUID and the inode number (the kernel draws it at random,
//     fs/ext4/ialloc.c), and rewrites the checksums seeded by it (the
//     inode's, its extent tree blocks', its directory blocks');
//   - zeroes unused inodes that the kernel wrote after the epoch (deleted
//     files keep their times and generation in the inode table);
//   - sets the superblock's write and mount times, mount count, kilobytes
//     written and last mount path to fixed values;
//   - empties the jbd2 journal (its blocks hold past transactions whose ids
//     and layout follow commit timing) and gives it a derived sequence;
//   - zeroes every free block (deleted files' data), by punching holes where
//     the file allows;
//   - recomputes the superblock, journal superblock and inode checksums
//     (crc32c, metadata_csum).
//
// It never changes what a file holds, its place on disk, or the bitmaps:
// where blocks land is the mount's business (see MountData, Tune).
package ext4repro

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// Errors of Normalize; the returned error wraps one of them.
var (
	// ErrNotExt4: no ext2/3/4 superblock at the region's start.
	ErrNotExt4 = errors.New("not an ext4 filesystem")
	// ErrUnclean: the filesystem was not cleanly unmounted (needs journal
	// recovery or fsck); normalizing it would lose data.
	ErrUnclean = errors.New("ext4 filesystem not cleanly unmounted")
	// ErrUnsupported: a feature Normalize does not handle (bigalloc, an
	// external journal, a block-mapped directory created after the epoch).
	ErrUnsupported = errors.New("ext4 feature not supported by the normalizer")
)

// Region names one filesystem: a regular file or block device at Path, the
// filesystem's first byte at Offset, Size bytes long (0: to the end).
type Region struct {
	Path   string
	Offset int64
	Size   int64
}

// Report says what Normalize changed.
type Report struct {
	Inodes        int   // in-use inodes rewritten (a time clamped or a generation set)
	Generations   int   // of which given a derived i_generation
	ClearedInodes int   // unused inodes zeroed
	JournalBytes  int64 // journal bytes zeroed (after its superblock)
	FreeBytes     int64 // free-block bytes zeroed
}

// Normalize makes the unmounted ext4 filesystem in r reproducible for src
// (see the package comment). A nil src does nothing. The filesystem must not
// be mounted and must have been cleanly unmounted (ErrUnclean otherwise,
// before any write). Cost: it reads the superblock, group descriptors,
// bitmaps and the used part of the inode tables, and writes only what
// changes; a few hundred milliseconds for a Debian root filesystem.
func Normalize(r Region, src *repro.Source) (Report, error) {
	return normalize(r, src, false)
}

// ClampTimes is Normalize for a filesystem that mke2fs -d has just made,
// with its clock at the epoch (repro.Source.Env: E2FSPROGS_FAKE_TIME) and
// a derived hash seed: the only times in it that are not the epoch are
// those mke2fs copied from the tree (atime, mtime, and the ctime of the
// tree's extraction), so it clamps the times of in-use inodes later than
// the epoch and recomputes their checksums, and sets the superblock's
// fields as Normalize does; it leaves the rest as mke2fs wrote it, which
// depends on the tree and the Source alone: no journal to empty, no free
// block written, generations 0, directories in the names' byte order
// with no deleted entries. It reads only the used part of the inode
// tables: 8 to 10 ms for the example's Debian root of 13,660 inodes,
// against 60 to 90 ms for Normalize, whose directory pass reads every
// directory block.
// Errors as Normalize's.
func ClampTimes(r Region, src *repro.Source) (Report, error) {
	return normalize(r, src, true)
}

func normalize(r Region, src *repro.Source, clampOnly bool) (Report, error) {
	var rep Report
	if src == nil {
		return rep, nil
	}
	f, err := os.OpenFile(r.Path, os.O_RDWR, 0)
	if err != nil {
		return rep, err
	}
	defer f.Close()
	fs, err := open(f, r)
	if err != nil {
		return rep, err
	}
	fs.src, fs.epoch, fs.clampOnly = src, src.Epoch(), clampOnly
	if err := fs.inodes(&rep); err != nil {
		return rep, err
	}
	if !clampOnly {
		if err := fs.journal(&rep); err != nil {
			return rep, err
		}
		if err := fs.freeSpace(&rep); err != nil {
			return rep, err
		}
	}
	return rep, fs.superblock()
}

type filesystem struct {
	f          *os.File
	r          Region
	sb         []byte
	bs         int64
	groups     int64
	ipg        int64
	bpg        int64
	blocks     int64
	firstData  int64
	inodeSize  int64
	descSize   int64
	csum       bool   // metadata_csum
	seed       uint32 // crc32c seed of every metadata checksum
	uuid       string
	gd         [][]byte
	src        *repro.Source
	epoch      int64
	inodeCache map[uint32][]byte
	// clampOnly: only in-use inodes' times (ClampTimes).
	clampOnly bool

	// punchMayKeep: f is a block device or a FUSE file, where a punched
	// hole may keep its data (qemu-storage-daemon's FUSE export of a qcow2
	// passes a punch on as a discard, which qcow2 drops for partial
	// clusters, measured with qemu 7.2; a loop device passes it on to its
	// file): zero ranges (FALLOC_FL_ZERO_RANGE) are asked for instead.
	punchMayKeep bool
}

func (fs *filesystem) errorf(base error, format string, a ...any) error {
	return fmt.Errorf("%s at offset %d: %w: %s", fs.r.Path, fs.r.Offset, base, fmt.Sprintf(format, a...))
}

func open(f *os.File, r Region) (*filesystem, error) {
	fs := &filesystem{f: f, r: r, sb: make([]byte, sbSize), punchMayKeep: punchMayKeep(f)}
	if _, err := f.ReadAt(fs.sb, r.Offset+sbOffset); err != nil {
		return nil, fmt.Errorf("%s at offset %d: reading the superblock: %w", r.Path, r.Offset, err)
	}
	sb := fs.sb
	if le16(sb, sbMagic) != ext4Magic {
		return nil, fs.errorf(ErrNotExt4, "no superblock magic")
	}
	incompat, ro := le32(sb, sbFeatureIncompat), le32(sb, sbFeatureRoCompat)
	switch {
	case incompat&incompatRecover != 0 || le16(sb, sbState)&stateValid == 0:
		return nil, fs.errorf(ErrUnclean, "run e2fsck, or mount and unmount it")
	case ro&roCompatBigalloc != 0:
		return nil, fs.errorf(ErrUnsupported, "bigalloc")
	case incompat&incompatJournalDev != 0:
		return nil, fs.errorf(ErrUnsupported, "external journal device")
	}
	fs.bs = 1024 << le32(sb, sbLogBlockSize)
	fs.blocks = int64(le32(sb, sbBlocksCountLo))
	if incompat&incompat64Bit != 0 {
		fs.blocks |= int64(le32(sb, sbBlocksCountHi)) << 32
		fs.descSize = int64(le16(sb, sbDescSize))
	}
	if fs.descSize < 32 {
		fs.descSize = 32
	}
	fs.firstData = int64(le32(sb, sbFirstDataBlock))
	fs.bpg = int64(le32(sb, sbBlocksPerGroup))
	fs.ipg = int64(le32(sb, sbInodesPerGroup))
	fs.inodeSize = 128
	if le32(sb, sbRevLevel) > 0 {
		fs.inodeSize = int64(le16(sb, sbInodeSize))
	}
	if fs.bpg == 0 || fs.ipg == 0 || fs.inodeSize < 128 || fs.bs > 65536 {
		return nil, fs.errorf(ErrNotExt4, "implausible geometry")
	}
	fs.groups = (fs.blocks - fs.firstData + fs.bpg - 1) / fs.bpg
	if r.Size > 0 && fs.blocks*fs.bs > r.Size {
		return nil, fs.errorf(ErrNotExt4, "the filesystem (%d bytes) is larger than the region (%d bytes)", fs.blocks*fs.bs, r.Size)
	}
	fs.csum = ro&roCompatMetaCsum != 0
	if incompat&incompatCsumSeed != 0 {
		fs.seed = le32(sb, sbChecksumSeed)
	} else {
		fs.seed = crc32c(^uint32(0), sb[sbUUID:sbUUID+16])
	}
	u, _ := uuid.FromBytes(sb[sbUUID : sbUUID+16])
	fs.uuid = u.String()
	return fs, fs.readDescriptors()
}

// readDescriptors reads the group descriptor table (contiguous after the
// superblock, or spread over the groups with meta_bg).
func (fs *filesystem) readDescriptors() error {
	perBlock := fs.bs / fs.descSize
	nblocks := (fs.groups + perBlock - 1) / perBlock
	meta := le32(fs.sb, sbFeatureIncompat)&incompatMetaBg != 0
	firstMeta := int64(le32(fs.sb, sbFirstMetaBg))
	for d := int64(0); d < nblocks; d++ {
		blk := fs.firstData + 1 + d
		if meta && d >= firstMeta {
			g := d * perBlock
			blk = fs.firstData + g*fs.bpg
			if fs.hasSuper(g) {
				blk++
			}
		}
		b, err := fs.read(blk*fs.bs, fs.bs)
		if err != nil {
			return err
		}
		for i := int64(0); i < perBlock && d*perBlock+i < fs.groups; i++ {
			fs.gd = append(fs.gd, b[i*fs.descSize:(i+1)*fs.descSize])
		}
	}
	return nil
}

// hasSuper: whether group g holds a superblock backup (sparse_super: groups
// 0, 1 and powers of 3, 5 and 7).
func (fs *filesystem) hasSuper(g int64) bool {
	if g <= 1 || le32(fs.sb, sbFeatureRoCompat)&roCompatSparseSuper == 0 {
		return true
	}
	for _, p := range []int64{3, 5, 7} {
		n := p
		for n < g {
			n *= p
		}
		if n == g {
			return true
		}
	}
	return false
}

func (fs *filesystem) gdField(g int64, lo, hi int) int64 {
	d := fs.gd[g]
	v := int64(le32(d, lo))
	if fs.descSize >= 64 && hi >= 0 {
		v |= int64(le32(d, hi)) << 32
	}
	return v
}

func (fs *filesystem) read(off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := fs.f.ReadAt(b, fs.r.Offset+off); err != nil {
		return nil, fmt.Errorf("%s: reading %d bytes at filesystem offset %d: %w", fs.r.Path, n, off, err)
	}
	return b, nil
}

func (fs *filesystem) write(off int64, b []byte) error {
	if _, err := fs.f.WriteAt(b, fs.r.Offset+off); err != nil {
		return fmt.Errorf("%s: writing %d bytes at filesystem offset %d: %w", fs.r.Path, len(b), off, err)
	}
	return nil
}

// zero makes [off, off+n) of the filesystem read as zeros: a punched hole
// where the file or device allows it (no data written, a sparse image), else
// written zeros.
func (fs *filesystem) zero(off, n int64) error {
	if n <= 0 {
		return nil
	}
	mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
	if fs.punchMayKeep {
		mode = unix.FALLOC_FL_ZERO_RANGE
	}
	err := unix.Fallocate(int(fs.f.Fd()), mode, fs.r.Offset+off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%s: punching %d bytes at filesystem offset %d: %w", fs.r.Path, n, off, err)
	}
	// Without hole punching (a FUSE export that refuses it), write zeros
	// only over what is not zero already: a sparse or trimmed image does
	// not grow.
	buf, zeros := make([]byte, min(n, 1<<20)), make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(buf)))
		if _, err := fs.f.ReadAt(buf[:c], fs.r.Offset+off); err != nil {
			return fmt.Errorf("%s: reading %d bytes at filesystem offset %d: %w", fs.r.Path, c, off, err)
		}
		if !bytes.Equal(buf[:c], zeros[:c]) {
			if err := fs.write(off, zeros[:c]); err != nil {
				return err
			}
		}
		off, n = off+c, n-c
	}
	return nil
}

// superblock fixes the fields the kernel sets from the clock or from the
// mount: write and mount times (clamped), the mount count, kilobytes written,
// the path it was last mounted on; then its checksum.
func (fs *filesystem) superblock() error {
	sb := fs.sb
	for _, t := range []struct{ lo, hi int }{
		{sbMtime, sbMtimeHi}, {sbWtime, sbWtimeHi}, {sbLastcheck, sbLastcheckHi},
		{sbFirstErrorTime, sbFirstErrTimeHi}, {sbLastErrorTime, sbLastErrTimeHi},
	} {
		v := int64(le32(sb, t.lo)) | int64(sb[t.hi])<<32
		if v > fs.epoch {
			put32(sb, t.lo, uint32(fs.epoch))
			sb[t.hi] = byte(fs.epoch >> 32)
		}
	}
	put16(sb, sbMntCount, 0)
	for i := 0; i < 8; i++ {
		sb[sbKbytesWritten+i] = 0
	}
	clear(sb[sbLastMounted : sbLastMounted+64])
	if fs.csum {
		put32(sb, sbChecksum, crc32c(^uint32(0), sb[:sbChecksum]))
	}
	return fs.write(sbOffset, sb)
}

// freeSpace zeroes every block its group's bitmap marks free. Groups still
// BLOCK_UNINIT were never allocated from and keep what they had.
func (fs *filesystem) freeSpace(rep *Report) error {
	for g := int64(0); g < fs.groups; g++ {
		if le16(fs.gd[g], gdFlags)&bgBlockUninit != 0 {
			continue
		}
		bm, err := fs.read(fs.gdField(g, gdBlockBitmapLo, gdBlockBitmapHi)*fs.bs, fs.bs)
		if err != nil {
			return err
		}
		start := fs.firstData + g*fs.bpg
		n := min(fs.bpg, fs.blocks-start)
		run := int64(-1)
		for i := int64(0); i <= n; i++ {
			free := i < n && bm[i/8]&(1<<(i%8)) == 0
			switch {
			case free && run < 0:
				run = i
			case !free && run >= 0:
				if err := fs.zero((start+run)*fs.bs, (i-run)*fs.bs); err != nil {
					return err
				}
				rep.FreeBytes += (i - run) * fs.bs
				run = -1
			}
		}
	}
	return nil
}

func (fs *filesystem) purpose(what string, ino uint32) string {
	return "ext4/" + fs.uuid + "/" + what + "/" + strconv.FormatUint(uint64(ino), 10)
}

// fuseMagic is FUSE_SUPER_MAGIC (linux/magic.h).
const fuseMagic = 0x65735546

// punchMayKeep tells whether a punched hole in f may keep its data: f is a
// block device, or a file on FUSE.
func punchMayKeep(f *os.File) bool {
	if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeDevice != 0 {
		return true
	}
	var st unix.Statfs_t
	return unix.Fstatfs(int(f.Fd()), &st) == nil && st.Type == fuseMagic
}
