package diskimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// Reproducible conversions. qemu-img convert is a function of its input
// except for three things, measured with qemu-img 7.2 (Debian 12):
//
//   - -W (out-of-order writes) lets coroutines allocate clusters in the
//     order they finish, so qcow2 (and vmdk, vhdx, vpc) tables differ from
//     run to run; compressed qcow2 most of all, as compression threads
//     finish in any order. Without -W, -m 8 still reads ahead in parallel
//     but writes in order: byte-identical output, for zstd and zlib too,
//     but one cluster compressed at a time. A compressed qcow2 is
//     therefore written with -W into a scratch file (in memory: see
//     scratch.go) and then laid out anew in guest order
//     (internal/qcow2canon), which depends only on the compressed bytes.
//   - the formats' own identifiers and times, drawn by qemu from
//     randomness or the clock: vmdk's CID, vhdx's header GUIDs, sequence
//     numbers and Page 83 ID plus the random log GUIDs of the log entries
//     it leaves behind, vpc's time stamp and unique ID. Patched below from
//     the build's repro.Source.
//   - vmdk's descriptor names its own file, which Convert writes under a
//     temporary name: patched to the final name in every build.
//
// qcow2 holds no identifier nor time of its own; raw is the data.

// convertWrites are qemu-img convert's parallelism flags: 8 coroutines
// (-m 8) always; out-of-order writes (-W) when the build is not
// reproducible or its output is canonicalized afterwards. In order, a zstd
// qcow2 of a 650 MiB Debian root took 4.0 s instead of 2.5 s here, zlib
// 25.6 s instead of 14.6 s (2 cores).
func convertWrites(src *repro.Source, canonicalized bool) []string {
	if src.Enabled() && !canonicalized {
		return []string{"-m", "8"}
	}
	return []string{"-m", "8", "-W"}
}

// normalize patches what qemu-img drew from randomness or the clock in the
// image part (of format f, to be renamed dst), from src; and vmdk's
// descriptor to name dst. A nil src leaves qemu's random values.
func normalize(part, dst string, f Format, src *repro.Source) error {
	var err error
	switch f {
	case VMDK:
		err = patchVMDK(part, filepath.Base(dst), src)
	case VHDX:
		if src.Enabled() {
			err = patchVHDX(part, src)
		}
	case VPC:
		if src.Enabled() {
			err = patchVPC(part, src)
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", f, dst, err)
	}
	return nil
}

var (
	vmdkCID    = regexp.MustCompile(`(?m)^CID=[0-9a-fA-F]{1,8}$`) // qemu prints it with PRIx32: not zero-padded
	vmdkExtent = regexp.MustCompile(`(?m)^((?:RW|RDONLY|NOACCESS) \d+ \w+ )"[^"\n]*"`)
)

// patchVMDK rewrites the descriptor embedded in a monolithicSparse vmdk
// (VMware's Virtual Disk Format 5.0, "Hosted Sparse Extent Header":
// descriptorOffset and descriptorSize, in sectors, at bytes 28 and 36): the
// extent's file name becomes name and, for a reproducible build, the
// content ID (CID) is derived from src. qemu draws the CID from
// g_random_int (block/vmdk.c).
func patchVMDK(path, name string, src *repro.Source) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 44)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return fmt.Errorf("reading the header: %w", err)
	}
	if string(hdr[:4]) != "KDMV" {
		return errors.New("no sparse extent header (magic KDMV)")
	}
	off := int64(binary.LittleEndian.Uint64(hdr[28:])) * 512
	size := int64(binary.LittleEndian.Uint64(hdr[36:])) * 512
	if off == 0 || size == 0 || size > 1<<20 {
		return fmt.Errorf("no embedded descriptor (offset %d, %d bytes)", off, size)
	}
	desc := make([]byte, size)
	if _, err := f.ReadAt(desc, off); err != nil {
		return fmt.Errorf("reading the descriptor: %w", err)
	}
	text := desc
	if i := bytes.IndexByte(desc, 0); i >= 0 {
		text = desc[:i]
	}
	out := vmdkExtent.ReplaceAll(text, []byte(`${1}"`+name+`"`))
	if src.Enabled() {
		out = vmdkCID.ReplaceAll(out, []byte(fmt.Sprintf("CID=%08x", src.Uint32("vmdk/cid"))))
	}
	if len(out) >= len(desc) {
		return fmt.Errorf("the descriptor with the file name %q does not fit its %d bytes", name, size)
	}
	buf := make([]byte, size)
	copy(buf, out)
	if _, err := f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("writing the descriptor: %w", err)
	}
	return f.Close()
}

// VHDX layout (Microsoft's [MS-VHDX] 2.2): two 4 KiB headers at 64 and 128
// KiB, the region table at 192 KiB, GUIDs in their on-disk byte order.
const (
	vhdxHeader1 = 64 << 10
	vhdxHeader2 = 128 << 10
	vhdxRegions = 192 << 10
	vhdxHdrSize = 4 << 10
)

var (
	vhdxMetadataRegion = []byte{0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e} // 8B7CA206-4790-4B9A-B8FE-575F050F886E
	vhdxPage83         = []byte{0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46} // BECA12AB-B2E6-4523-93EF-C309E000C746
	castagnoli         = crc32.MakeTable(crc32.Castagnoli)
)

// patchVHDX derives from src what qemu draws at random (block/vhdx.c:
// vhdx_guid_generate, g_random_int): in both headers the sequence numbers
// (kept in the same order and distance, so the same header stays current),
// FileWriteGuid and DataWriteGuid (values equal in qemu's file stay equal),
// with their CRC-32C; the Page 83 ID in the metadata region; and it zeroes
// the log, whose stale entries carry a random log GUID: a header whose
// LogGuid is zero says the log is empty ([MS-VHDX] 2.2.2.1), so readers
// never look at it. A header with a log to replay is refused.
func patchVHDX(path string, src *repro.Source) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var hdrs [2][]byte
	for i, off := range []int64{vhdxHeader1, vhdxHeader2} {
		h := make([]byte, vhdxHdrSize)
		if _, err := f.ReadAt(h, off); err != nil {
			return fmt.Errorf("reading header %d: %w", i+1, err)
		}
		if string(h[:4]) != "head" {
			return fmt.Errorf("header %d: no signature \"head\" at byte %d", i+1, off)
		}
		if !bytes.Equal(h[48:64], make([]byte, 16)) {
			return fmt.Errorf("header %d: the log holds entries to replay (LogGuid is set)", i+1)
		}
		hdrs[i] = h
	}
	seq0, seq1 := binary.LittleEndian.Uint64(hdrs[0][8:]), binary.LittleEndian.Uint64(hdrs[1][8:])
	low := min(seq0, seq1)
	guids := map[string][]byte{}
	for i, h := range hdrs {
		binary.LittleEndian.PutUint64(h[8:], binary.LittleEndian.Uint64(h[8:])-low+1)
		for _, at := range []int{16, 32} { // FileWriteGuid, DataWriteGuid
			old := string(h[at : at+16])
			if _, ok := guids[old]; !ok {
				u := src.UUID(fmt.Sprintf("vhdx/header-guid/%d", len(guids)))
				guids[old] = u[:]
			}
			copy(h[at:at+16], guids[old])
		}
		binary.LittleEndian.PutUint32(h[4:], 0)
		binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(h, castagnoli))
		if _, err := f.WriteAt(h, []int64{vhdxHeader1, vhdxHeader2}[i]); err != nil {
			return fmt.Errorf("writing header %d: %w", i+1, err)
		}
	}
	cur := hdrs[1]
	if seq0 > seq1 {
		cur = hdrs[0]
	}
	logLen, logOff := int64(binary.LittleEndian.Uint32(cur[68:])), int64(binary.LittleEndian.Uint64(cur[72:]))
	if logLen > 0 {
		if err := zeroRange(f, logOff, logLen); err != nil {
			return fmt.Errorf("emptying the log: %w", err)
		}
	}
	return patchVHDXPage83(f, src)
}

// patchVHDXPage83 finds the metadata region in the region table and sets
// the Page 83 Data item, the disk's unique SCSI ID.
func patchVHDXPage83(f *os.File, src *repro.Source) error {
	rt := make([]byte, 64<<10)
	if _, err := f.ReadAt(rt, vhdxRegions); err != nil {
		return fmt.Errorf("reading the region table: %w", err)
	}
	if string(rt[:4]) != "regi" {
		return errors.New("no region table signature \"regi\"")
	}
	n := int(binary.LittleEndian.Uint32(rt[8:]))
	var meta int64
	for i := 0; i < n && 16+32*(i+1) <= len(rt); i++ {
		e := rt[16+32*i:]
		if bytes.Equal(e[:16], vhdxMetadataRegion) {
			meta = int64(binary.LittleEndian.Uint64(e[16:]))
		}
	}
	if meta == 0 {
		return errors.New("no metadata region in the region table")
	}
	mt := make([]byte, 64<<10)
	if _, err := f.ReadAt(mt, meta); err != nil || string(mt[:8]) != "metadata" {
		return fmt.Errorf("no metadata table at byte %d (%v)", meta, err)
	}
	count := int(binary.LittleEndian.Uint16(mt[10:]))
	for i := 0; i < count && 32+32*(i+1) <= len(mt); i++ {
		e := mt[32+32*i:]
		if !bytes.Equal(e[:16], vhdxPage83) {
			continue
		}
		if l := binary.LittleEndian.Uint32(e[20:]); l != 16 {
			return fmt.Errorf("Page 83 Data is %d bytes, not 16", l)
		}
		u := src.UUID("vhdx/page83")
		if _, err := f.WriteAt(u[:], meta+int64(binary.LittleEndian.Uint32(e[16:]))); err != nil {
			return fmt.Errorf("writing Page 83 Data: %w", err)
		}
		return nil
	}
	return errors.New("no Page 83 Data in the metadata table")
}

// zeroRange makes n bytes at off read as zeros: a hole where the
// filesystem punches one, written zeros elsewhere.
func zeroRange(f *os.File, off, n int64) error {
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err == nil {
		return nil
	}
	_, err := f.WriteAt(make([]byte, n), off)
	return err
}

// vpcEpoch is the origin of the VHD footer's time stamp: 2000-01-01
// 00:00:00 UTC, in Unix seconds.
const vpcEpoch = 946684800

// vpcDiskFixed is the footer's disk type of a fixed VHD (byte 60,
// big-endian; 3 is dynamic, 4 differencing).
const vpcDiskFixed = 2

// patchVPC sets, in the VHD footer at the end of the file and in its copy
// at byte 0 (dynamic disks; a fixed disk has none, its byte 0 is the
// guest's), the time stamp to the build's epoch (seconds since 2000-01-01
// UTC, 0 for an earlier epoch) and the unique ID from src, and recomputes
// the checksum: the one's complement of the sum of the footer's bytes
// without the checksum field (Microsoft's "Virtual Hard Disk Image Format
// Specification", Hard Disk Footer Format). qemu takes both from the clock
// and g_random (block/vpc.c).
func patchVPC(path string, src *repro.Source) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < 512 {
		return errors.New("shorter than a footer")
	}
	ts := uint32(0)
	if e := src.Epoch() - vpcEpoch; e > 0 {
		ts = uint32(min(e, 1<<32-1))
	}
	id := src.UUID("vpc/unique-id")
	fixed := false
	for i, off := range []int64{fi.Size() - 512, 0} {
		if fixed {
			break
		}
		ft := make([]byte, 512)
		if _, err := f.ReadAt(ft, off); err != nil {
			return err
		}
		if string(ft[:8]) != "conectix" {
			if i == 0 {
				return errors.New("no footer (cookie \"conectix\") at the end of the file")
			}
			continue
		}
		fixed = i == 0 && binary.BigEndian.Uint32(ft[60:]) == vpcDiskFixed
		binary.BigEndian.PutUint32(ft[24:], ts)
		copy(ft[68:84], id[:])
		binary.BigEndian.PutUint32(ft[64:], 0)
		var sum uint32
		for _, b := range ft {
			sum += uint32(b)
		}
		binary.BigEndian.PutUint32(ft[64:], ^sum)
		if _, err := f.WriteAt(ft, off); err != nil {
			return err
		}
	}
	return f.Close()
}
