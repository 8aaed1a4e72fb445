package diskimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// SizeSource says where PeekVirtualSize read a size from.
type SizeSource string

// Where a virtual size can be read without decompressing or converting.
const (
	SizeUnknown    SizeSource = ""
	SizeQCOW2      SizeSource = "qcow2 header"
	SizeVMDK       SizeSource = "vmdk header"
	SizeXZIndex    SizeSource = "xz index"
	SizeZstdFrames SizeSource = "zstd frame headers"
	SizeFile       SizeSource = "file size"
)

// PeekVirtualSize reads path's virtual size in bytes without decompressing
// or converting it: from a qcow2 header (size, offset 24, big-endian; QEMU's
// docs/interop/qcow2.txt), a monolithic sparse vmdk header (capacity in
// sectors, offset 12; VMware's Virtual Disk Format 1.1), and, for a
// compressed raw image, from the compressed stream: the xz index, which
// records every block's uncompressed size (xz file format 1.2.1, section
// 4), or the Frame_Content_Size of every zstd frame (RFC 8878, 3.1.1.1.4;
// the zstd tool writes it when it knows the input's size). A compressed
// qcow2 or vmdk gives its header through DecompressedHead. A gzip stream
// records its size modulo 2^32 only (RFC 1952, ISIZE): not a size of an
// image over 4 GiB, so gzip is SizeUnknown, as are a zstd frame without
// its content size, vhdx, vdi and vpc (qemu-img reads those). An
// uncompressed raw file's size is its length.
func PeekVirtualSize(path string) (int64, SizeSource, error) {
	kind, err := DetectCompression(path)
	if err != nil {
		return 0, SizeUnknown, err
	}
	head, err := DecompressedHead(path, 512)
	if err != nil {
		return 0, SizeUnknown, err
	}
	switch DetectHead(head) {
	case QCOW2:
		if len(head) < 32 {
			return 0, SizeUnknown, nil
		}
		return int64(binary.BigEndian.Uint64(head[24:32])), SizeQCOW2, nil
	case VMDK:
		if !bytes.HasPrefix(head, []byte("KDMV")) || len(head) < 20 {
			return 0, SizeUnknown, nil // a descriptor: qemu-img reads its extents
		}
		return int64(binary.LittleEndian.Uint64(head[12:20])) * 512, SizeVMDK, nil
	case Raw:
	default:
		return 0, SizeUnknown, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, SizeUnknown, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, SizeUnknown, err
	}
	switch kind {
	case NoCompression:
		return st.Size(), SizeFile, nil
	case XZ:
		n, err := xzUncompressedSize(f, st.Size())
		if err != nil {
			return 0, SizeUnknown, fmt.Errorf("%s: %w", path, err)
		}
		return n, SizeXZIndex, nil
	case Zstd:
		n, ok, err := zstdContentSize(f, st.Size())
		if err != nil || !ok {
			return 0, SizeUnknown, err
		}
		return n, SizeZstdFrames, nil
	}
	return 0, SizeUnknown, nil
}

// xzUncompressedSize sums the uncompressed sizes in the index of every
// stream of an xz file, walking back from its end over stream padding.
func xzUncompressedSize(f io.ReaderAt, size int64) (int64, error) {
	var total int64
	end := size
	word := make([]byte, 4)
	for end > 0 {
		// Stream padding: multiples of four null bytes between streams.
		for end >= 4 {
			if _, err := f.ReadAt(word, end-4); err != nil {
				return 0, err
			}
			if !bytes.Equal(word, []byte{0, 0, 0, 0}) {
				break
			}
			end -= 4
		}
		if end < 24 {
			return 0, errors.New("xz: no stream footer")
		}
		footer := make([]byte, 12)
		if _, err := f.ReadAt(footer, end-12); err != nil {
			return 0, err
		}
		if string(footer[10:12]) != "YZ" {
			return 0, errors.New("xz: no stream footer")
		}
		if crc32.ChecksumIEEE(footer[4:10]) != binary.LittleEndian.Uint32(footer[:4]) {
			return 0, errors.New("xz: stream footer damaged (CRC32)")
		}
		indexSize := (int64(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
		indexStart := end - 12 - indexSize
		if indexStart < 12 {
			return 0, errors.New("xz: index out of the file")
		}
		index := make([]byte, indexSize)
		if _, err := f.ReadAt(index, indexStart); err != nil {
			return 0, err
		}
		if index[0] != 0 || crc32.ChecksumIEEE(index[:indexSize-4]) != binary.LittleEndian.Uint32(index[indexSize-4:]) {
			return 0, errors.New("xz: index damaged")
		}
		p := index[1:]
		count, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, errors.New("xz: bad index")
		}
		p = p[n:]
		var blocks int64
		for range count {
			unpadded, n := binary.Uvarint(p)
			if n <= 0 {
				return 0, errors.New("xz: bad index record")
			}
			p = p[n:]
			uncompressed, n := binary.Uvarint(p)
			if n <= 0 {
				return 0, errors.New("xz: bad index record")
			}
			p = p[n:]
			blocks += (int64(unpadded) + 3) &^ 3
			total += int64(uncompressed)
		}
		start := indexStart - blocks - 12
		if start < 0 {
			return 0, errors.New("xz: blocks out of the file")
		}
		header := make([]byte, 6)
		if _, err := f.ReadAt(header, start); err != nil {
			return 0, err
		}
		if !bytes.Equal(header, compressionMagic[1].magic) {
			return 0, errors.New("xz: stream header not where the index says")
		}
		end = start
	}
	return total, nil
}

// zstdContentSize sums the Frame_Content_Size of every frame, walking the
// frames' block headers; ok is false when a frame does not record it.
func zstdContentSize(f io.ReaderAt, size int64) (total int64, ok bool, err error) {
	buf := make([]byte, 18)
	for off := int64(0); off < size; {
		if _, err := f.ReadAt(buf[:8], off); err != nil {
			return 0, false, fmt.Errorf("zstd frame at %d: %w", off, err)
		}
		magic := binary.LittleEndian.Uint32(buf[:4])
		if magic&0xfffffff0 == 0x184d2a50 { // a skippable frame
			off += 8 + int64(binary.LittleEndian.Uint32(buf[4:8]))
			continue
		}
		if magic != 0xfd2fb528 {
			return 0, false, fmt.Errorf("zstd: no frame at %d", off)
		}
		fhd := buf[4]
		single := fhd>>5&1 == 1
		pos := off + 5
		if !single {
			pos++ // Window_Descriptor
		}
		pos += []int64{0, 1, 2, 4}[fhd&3] // Dictionary_ID
		fcsLen := []int{0, 2, 4, 8}[fhd>>6]
		if fcsLen == 0 && single {
			fcsLen = 1
		}
		if fcsLen == 0 {
			return 0, false, nil
		}
		fcs := make([]byte, 8)
		if _, err := f.ReadAt(fcs[:fcsLen], pos); err != nil {
			return 0, false, err
		}
		n := int64(binary.LittleEndian.Uint64(fcs))
		if fcsLen == 2 {
			n += 256
		}
		total += n
		pos += int64(fcsLen)
		for last := false; !last; {
			if _, err := f.ReadAt(buf[:3], pos); err != nil {
				return 0, false, fmt.Errorf("zstd block at %d: %w", pos, err)
			}
			h := uint32(buf[0]) | uint32(buf[1])<<8 | uint32(buf[2])<<16
			last = h&1 == 1
			bsize := int64(h >> 3)
			if (h>>1)&3 == 1 { // RLE: one byte stands for bsize
				bsize = 1
			}
			pos += 3 + bsize
		}
		if fhd>>2&1 == 1 {
			pos += 4 // Content_Checksum
		}
		off = pos
	}
	return total, true, nil
}
