// Package qcow2canon rewrites a qcow2 image into a canonical layout that
// depends only on its guest content and its compressed clusters' bytes, not
// on the order in which the writer allocated clusters. qemu-img convert -W
// (out-of-order writes) compresses clusters in parallel and places them in
// the order the compression threads finish: two conversions of one disk
// give files of one content but other bytes. Canonicalize makes them equal.
//
// The format is QEMU's docs/interop/qcow2.txt (sections "Header", "Header
// extensions", "Host cluster management", "Cluster mapping").
package qcow2canon

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Header fields (qcow2.txt "Header"), byte offsets of the version 3 header.
const (
	hdrL1Size       = 36
	hdrL1Offset     = 40
	hdrRTOffset     = 48
	hdrRTClusters   = 56
	hdrIncompatible = 72
	hdrAutoclear    = 88
	hdrRefOrder     = 96
	hdrLength       = 100
	hdrCompression  = 104
)

// Header extension types (qcow2.txt "Header extensions") whose data names
// places in the file or outside it: refused, as they cannot be moved.
var refusedExt = map[uint32]string{
	0x23852875: "bitmaps",
	0x0537be77: "full disk encryption",
	0x44415441: "external data file",
}

const (
	oflagCopied     = uint64(1) << 63
	oflagCompressed = uint64(1) << 62
	oflagZero       = uint64(1)
	offsetMask      = uint64(0x00fffffffffffe00) // bits 9-55
	incompatCompr   = uint64(1) << 3             // compression type field in use
)

type kind uint8

const (
	unallocated kind = iota
	zero             // standard descriptor, bit 0: reads as zeros
	data             // standard descriptor with a host cluster
	compressed
)

// entry is one guest cluster: where its bytes are in the input (srcOff,
// n bytes) and in the output (dstOff, relative to the data area).
type entry struct {
	kind   kind
	srcOff int64
	n      int64
	dstOff int64
}

// image is a parsed input.
type image struct {
	f        *os.File
	data     []byte // the whole input, mapped read-only (see Canonicalize)
	header   []byte // header and its extensions, up to and with the end marker
	bits     uint
	cs       int64
	l1       []uint64
	refOrder uint
	zstd     bool
	l2       [][]entry // per L1 entry; nil: no L2 table
	mapped   bool      // data maps f (else it is a copy in memory)
}

// Canonicalize reads the qcow2 at src and writes dst (created or
// truncated), a qcow2 of the same guest content laid out as: the header
// (its fields and extensions byte for byte, but the offsets of the tables
// below), the L1 table, the refcount table, the refcount blocks, the L2
// tables in L1 order, then the data clusters in guest order: compressed
// clusters' compressed bytes packed back to back as qemu's
// qcow2_alloc_bytes packs them (one may cross into the next host cluster,
// which the spec allows), uncompressed clusters aligned. Zero clusters
// stay zero-flagged descriptors; refcounts are recomputed, with the
// input's refcount_order. The output is a function of the guest clusters'
// stored bytes alone.
//
// Only a plain version 3 image is taken: no backing file, encryption,
// snapshots, external data file, extended L2 entries, bitmaps, nor a dirty
// or corrupt flag; other input gives an error naming src.
func Canonicalize(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	img, err := parse(f)
	if err != nil {
		return fmt.Errorf("qcow2 %s: %w", src, err)
	}
	// The input is mapped, not read: the compressed clusters' lengths are
	// read from their headers in place, and their bytes then go from the
	// input's page cache to the output's inside the kernel (sendfile, see
	// copier), never mapped. With reads, the 19,500 preads and two copies
	// of a 217 MiB zstd qcow2 were most of the rewrite's time; with
	// pwritev from the mapping, the faults that map qemu's freshly
	// written pages and the unmap took 0.26-0.29 s against 0.10 s.
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	img.data, err = mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err == nil {
		defer unix.Munmap(img.data)
		img.mapped = true
		if img.zstd {
			// Only the frames' headers are read: no fault-around.
			unix.Madvise(img.data, unix.MADV_RANDOM)
		}
	} else {
		// A filesystem that cannot map files (9p without a cache, some
		// FUSE): the file is read into memory instead.
		img.data = make([]byte, fi.Size())
		if _, err := f.ReadAt(img.data, 0); err != nil {
			return fmt.Errorf("qcow2 %s: reading it: %w", src, err)
		}
	}
	if err := img.blobLengths(); err != nil {
		return fmt.Errorf("qcow2 %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := img.write(out); err != nil {
		return fmt.Errorf("qcow2 %s: writing %s: %w", src, dst, err)
	}
	return out.Close()
}

// mmap is unix.Mmap; the tests replace it to take the read fallback.
var mmap = unix.Mmap

// span is the input's bytes of cluster e: its n bytes at srcOff, cut at
// the file's end (a compressed cluster's last sector may lie past it), or
// an error if it starts there or, uncompressed, ends past it.
func (img *image) span(e *entry) ([]byte, error) {
	size := int64(len(img.data))
	end := min(e.srcOff+e.n, size)
	if e.srcOff < 0 || e.srcOff >= size || (e.kind == data && end < e.srcOff+e.n) {
		return nil, fmt.Errorf("the cluster at byte %d (%d bytes) lies past the file's end (%d bytes)", e.srcOff, e.n, size)
	}
	return img.data[e.srcOff:end], nil
}

func parse(f *os.File) (*image, error) {
	h := make([]byte, 112)
	if _, err := f.ReadAt(h, 0); err != nil {
		return nil, fmt.Errorf("reading the header: %w", err)
	}
	be := binary.BigEndian
	if string(h[:4]) != "QFI\xfb" {
		return nil, errors.New("not a qcow2 (no magic QFI\\xfb)")
	}
	if v := be.Uint32(h[4:]); v != 3 {
		return nil, fmt.Errorf("qcow2 version %d, only 3 is canonicalized", v)
	}
	img := &image{f: f, bits: uint(be.Uint32(h[20:]))}
	if img.bits < 9 || img.bits > 21 {
		return nil, fmt.Errorf("cluster_bits %d out of 9..21", img.bits)
	}
	img.cs = 1 << img.bits
	switch {
	case be.Uint64(h[8:]) != 0:
		return nil, errors.New("it has a backing file")
	case be.Uint32(h[32:]) != 0:
		return nil, errors.New("it is encrypted")
	case be.Uint32(h[60:]) != 0:
		return nil, errors.New("it has internal snapshots")
	}
	if inc := be.Uint64(h[hdrIncompatible:]); inc&^incompatCompr != 0 {
		return nil, fmt.Errorf("incompatible features %#x (dirty, corrupt, external data file or extended L2) are not canonicalized", inc)
	}
	if ac := be.Uint64(h[hdrAutoclear:]); ac != 0 {
		return nil, fmt.Errorf("autoclear features %#x (bitmaps, raw external data) are not canonicalized", ac)
	}
	img.refOrder = uint(be.Uint32(h[hdrRefOrder:]))
	if img.refOrder > 6 {
		return nil, fmt.Errorf("refcount_order %d out of 0..6", img.refOrder)
	}
	hlen := int64(be.Uint32(h[hdrLength:]))
	if hlen < 104 || hlen%8 != 0 || hlen > img.cs {
		return nil, fmt.Errorf("header_length %d", hlen)
	}
	if hlen > hdrCompression {
		switch h[hdrCompression] {
		case 0:
		case 1:
			img.zstd = true
		default:
			return nil, fmt.Errorf("compression_type %d unknown", h[hdrCompression])
		}
	}
	cl := make([]byte, img.cs)
	if _, err := f.ReadAt(cl, 0); err != nil {
		return nil, fmt.Errorf("reading the header cluster: %w", err)
	}
	// Header extensions: type, length, data padded to 8 bytes; type 0 ends.
	p := hlen
	for {
		if p+8 > img.cs {
			return nil, errors.New("header extensions run past the first cluster")
		}
		typ, n := be.Uint32(cl[p:]), int64(be.Uint32(cl[p+4:]))
		p += 8
		if typ == 0 {
			break
		}
		if name, ok := refusedExt[typ]; ok {
			return nil, fmt.Errorf("header extension %q is not canonicalized", name)
		}
		p += (n + 7) &^ 7
	}
	img.header = cl[:p]

	l1n := int64(be.Uint32(h[hdrL1Size:]))
	l1b := make([]byte, l1n*8)
	if _, err := f.ReadAt(l1b, int64(be.Uint64(h[hdrL1Offset:]))); err != nil {
		return nil, fmt.Errorf("reading the L1 table: %w", err)
	}
	img.l1 = make([]uint64, l1n)
	img.l2 = make([][]entry, l1n)
	perL2 := img.cs / 8
	x := 62 - (img.bits - 8)
	l2b := make([]byte, img.cs)
	for i := range img.l1 {
		l2off := be.Uint64(l1b[i*8:]) & offsetMask
		if l2off == 0 {
			continue
		}
		if _, err := f.ReadAt(l2b, int64(l2off)); err != nil {
			return nil, fmt.Errorf("reading the L2 table at byte %d: %w", l2off, err)
		}
		es := make([]entry, perL2)
		used := false
		for j := range es {
			e := be.Uint64(l2b[j*8:])
			switch {
			case e&oflagCompressed != 0:
				off := e & (1<<x - 1)
				nsec := (e >> x) & (1<<(62-x) - 1)
				es[j] = entry{kind: compressed, srcOff: int64(off), n: int64(off&^511 + (nsec+1)*512 - off)}
			case e&oflagZero != 0:
				es[j] = entry{kind: zero}
			case e&offsetMask != 0:
				es[j] = entry{kind: data, srcOff: int64(e & offsetMask), n: img.cs}
			default:
				continue
			}
			used = true
		}
		if used {
			img.l2[i] = es
		}
	}
	return img, nil
}

// blobLengths replaces each compressed cluster's sector span by the exact
// length of its compressed data: the span may end inside the next blob,
// whose bytes depend on the order of allocation. qemu writes one zstd
// frame (ZSTD_compressStream2 with ZSTD_e_end) or one raw deflate stream
// (deflateInit2, window bits -12) per cluster (block/qcow2-threads.c).
func (img *image) blobLengths() error {
	var todo []*entry
	for _, es := range img.l2 {
		for j := range es {
			if es[j].kind == compressed {
				todo = append(todo, &es[j])
			}
		}
	}
	workers := runtime.GOMAXPROCS(0)
	if img.zstd {
		// Header parsing only: not worth a goroutine.
		workers = 1
	}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var fr io.ReadCloser
			for i := w; i < len(todo); i += workers {
				e := todo[i]
				span, err := img.span(e)
				if err != nil {
					errs[w] = err
					return
				}
				var n int
				if img.zstd {
					n, err = zstdFrameLen(span)
				} else {
					n, fr, err = deflateLen(span, fr, img.cs)
				}
				if err != nil {
					errs[w] = fmt.Errorf("compressed cluster at byte %d: %w", e.srcOff, err)
					return
				}
				e.n = int64(n)
			}
		}(w)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// zstdFrameLen gives the length of the zstd frame at the start of b
// (RFC 8878 3.1.1: magic, frame header, blocks up to the one with
// Last_Block set, optional 4-byte checksum).
func zstdFrameLen(b []byte) (int, error) {
	if len(b) < 6 || binary.LittleEndian.Uint32(b) != 0xfd2fb528 {
		return 0, errors.New("no zstd frame magic")
	}
	fhd := b[4]
	if fhd&0x08 != 0 {
		return 0, errors.New("zstd frame header's reserved bit is set")
	}
	single := fhd&0x20 != 0
	p := 5
	if !single {
		p++ // Window_Descriptor
	}
	p += [4]int{0, 1, 2, 4}[fhd&3] // Dictionary_ID
	fcs := [4]int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		fcs = 1
	}
	p += fcs
	for {
		if p+3 > len(b) {
			return 0, errors.New("zstd frame runs past its sectors")
		}
		h := uint32(b[p]) | uint32(b[p+1])<<8 | uint32(b[p+2])<<16
		p += 3
		switch (h >> 1) & 3 {
		case 0, 2: // Raw_Block, Compressed_Block
			p += int(h >> 3)
		case 1: // RLE_Block
			p++
		default:
			return 0, errors.New("zstd block of reserved type")
		}
		if h&1 != 0 {
			break
		}
	}
	if fhd&0x04 != 0 {
		p += 4 // Content_Checksum
	}
	if p > len(b) {
		return 0, errors.New("zstd frame runs past its sectors")
	}
	return p, nil
}

// deflateLen decodes the raw deflate stream at the start of b and gives
// the bytes it consumed: flate reads a byte at a time from an
// io.ByteReader and stops at the final block's end. The stream must
// decode to one cluster (cs bytes). fr is reused between calls.
func deflateLen(b []byte, fr io.ReadCloser, cs int64) (int, io.ReadCloser, error) {
	r := bytes.NewReader(b)
	if fr == nil {
		fr = flate.NewReader(r)
	} else if err := fr.(flate.Resetter).Reset(r, nil); err != nil {
		return 0, fr, err
	}
	n, err := io.Copy(io.Discard, fr)
	if err != nil {
		return 0, fr, fmt.Errorf("deflate: %w", err)
	}
	if n != cs {
		return 0, fr, fmt.Errorf("deflate stream gives %d bytes, not a cluster of %d", n, cs)
	}
	return len(b) - r.Len(), fr, nil
}

// layout places the data clusters, in guest order, relative to the data
// area's start (cluster aligned), as qemu allocates them when it writes in
// order: an uncompressed cluster takes the next free cluster; compressed
// data continues where the last compressed data ended while it fits that
// cluster, else it starts a new one, and runs into it when the new one is
// contiguous (qcow2_alloc_bytes, block/qcow2-refcount.c). It gives the
// refcount of each host cluster of the data area.
func (img *image) layout() []uint64 {
	maxRef := uint64(1)<<(uint(1)<<img.refOrder) - 1
	if img.refOrder == 6 {
		maxRef = 1<<63 - 1
	}
	cs := img.cs
	var refs []uint64 // per cluster; len(refs) is the next free cluster
	var cpos int64    // end of the last compressed data; 0: none in a cluster with room
	for _, es := range img.l2 {
		for j := range es {
			e := &es[j]
			switch e.kind {
			case compressed:
				if cpos != 0 && refs[cpos/cs] == maxRef {
					cpos = 0
				}
				if cpos == 0 || cs-cpos%cs < e.n {
					next := int64(len(refs)) * cs
					refs = append(refs, 0)
					if cpos == 0 || (cpos+cs-1)/cs*cs != next {
						cpos = next
					}
				}
				for c := cpos / cs; c <= (cpos+e.n-1)/cs; c++ {
					refs[c]++
				}
				e.dstOff = cpos
				cpos += e.n
				if cpos%cs == 0 {
					cpos = 0
				}
			case data:
				e.dstOff = int64(len(refs)) * cs
				refs = append(refs, 1)
			}
		}
	}
	return refs
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func (img *image) write(out *os.File) error {
	be := binary.BigEndian
	cs := img.cs
	dataRefs := img.layout()
	var nL2 int64
	for _, es := range img.l2 {
		if es != nil {
			nL2++
		}
	}
	l1c := max(1, ceilDiv(int64(len(img.l1))*8, cs))
	perBlock := cs * 8 >> img.refOrder
	// The refcount blocks count themselves and the table: find the fixed point.
	rb, rtc := int64(1), int64(1)
	for {
		n := 1 + l1c + rtc + rb + nL2 + int64(len(dataRefs))
		nrb := ceilDiv(n, perBlock)
		nrtc := ceilDiv(nrb*8, cs)
		if nrb == rb && nrtc == rtc {
			break
		}
		rb, rtc = max(rb, nrb), max(rtc, nrtc)
	}
	l1Off := cs
	rtOff := l1Off + l1c*cs
	rbOff := rtOff + rtc*cs
	l2Off := rbOff + rb*cs
	dataOff := l2Off + nL2*cs
	meta := dataOff / cs

	w := bufio.NewWriterSize(out, 1<<20)
	hdr := make([]byte, cs)
	copy(hdr, img.header)
	be.PutUint64(hdr[hdrL1Offset:], uint64(l1Off))
	be.PutUint64(hdr[hdrRTOffset:], uint64(rtOff))
	be.PutUint32(hdr[hdrRTClusters:], uint32(rtc))
	w.Write(hdr)

	l1 := make([]byte, l1c*cs)
	next := l2Off
	for i, es := range img.l2 {
		if es != nil {
			be.PutUint64(l1[i*8:], uint64(next)|oflagCopied)
			next += cs
		}
	}
	w.Write(l1)

	rt := make([]byte, rtc*cs)
	for i := int64(0); i < rb; i++ {
		be.PutUint64(rt[i*8:], uint64(rbOff+i*cs))
	}
	w.Write(rt)

	blocks := make([]byte, rb*cs)
	width := uint(1) << img.refOrder
	set := func(c int64, v uint64) {
		bit := uint64(c) * uint64(width)
		if width >= 8 {
			b := blocks[bit/8 : bit/8+uint64(width/8)]
			for k := len(b) - 1; k >= 0; k-- {
				b[k] = byte(v)
				v >>= 8
			}
			return
		}
		blocks[bit/8] |= byte(v << (bit % 8)) // qemu's get_refcount_ro0..2: LSB first
	}
	for c := int64(0); c < meta; c++ {
		set(c, 1)
	}
	for c, v := range dataRefs {
		set(meta+int64(c), v)
	}
	w.Write(blocks)

	x := 62 - (img.bits - 8)
	l2 := make([]byte, cs)
	for _, es := range img.l2 {
		if es == nil {
			continue
		}
		clear(l2)
		for j, e := range es {
			var d uint64
			switch e.kind {
			case zero:
				d = oflagZero
			case data:
				d = uint64(dataOff+e.dstOff) | oflagCopied
			case compressed:
				off := uint64(dataOff + e.dstOff)
				nsec := (off+uint64(e.n)-1)>>9 - off>>9
				d = oflagCompressed | nsec<<x | off
			}
			be.PutUint64(l2[j*8:], d)
		}
		w.Write(l2)
	}

	if err := w.Flush(); err != nil {
		return err
	}
	// Data in guest order: mostly ascending, but compressed data may go
	// back to fill a cluster left behind by an uncompressed one.
	var cw interface {
		copy(e *entry, b []byte, off int64) error
		flush() error
	} = &gather{fd: int(out.Fd())}
	if img.mapped {
		cw = &copier{src: int(img.f.Fd()), dst: int(out.Fd()), data: img.data}
	}
	for _, es := range img.l2 {
		for j := range es {
			e := &es[j]
			if e.kind != data && e.kind != compressed {
				continue
			}
			b, err := img.span(e)
			if err != nil {
				return err
			}
			if err := cw.copy(e, b, dataOff+e.dstOff); err != nil {
				return err
			}
		}
	}
	if err := cw.flush(); err != nil {
		return err
	}
	// Whole clusters, as qemu-img check counts them; the tail is a hole.
	return out.Truncate(dataOff + int64(len(dataRefs))*cs)
}

// gather collects writes that follow one another in the output into one
// pwritev of slices of the input's mapping.
type gather struct {
	fd   int
	off  int64
	n    int64
	iovs [][]byte
}

// maxIOV is IOV_MAX on Linux.
const maxIOV = 1024

func (g *gather) copy(_ *entry, p []byte, off int64) error { return g.writeAt(p, off) }

func (g *gather) writeAt(p []byte, off int64) error {
	if off != g.off+g.n || len(g.iovs) == maxIOV {
		if err := g.flush(); err != nil {
			return err
		}
		g.off = off
	}
	g.iovs = append(g.iovs, p)
	g.n += int64(len(p))
	return nil
}

func (g *gather) flush() error {
	iovs, off := g.iovs, g.off
	for len(iovs) > 0 {
		n, err := unix.Pwritev(g.fd, iovs, off)
		if err != nil {
			return fmt.Errorf("writing %d bytes at byte %d: %w", g.n, g.off, err)
		}
		if n == 0 {
			return fmt.Errorf("writing %d bytes at byte %d: %w", g.n, g.off, io.ErrShortWrite)
		}
		// A short write: go on from where it stopped.
		off += int64(n)
		for n > 0 && len(iovs) > 0 {
			if n < len(iovs[0]) {
				iovs[0] = iovs[0][n:]
				n = 0
			} else {
				n -= len(iovs[0])
				iovs = iovs[1:]
			}
		}
	}
	g.off, g.n, g.iovs = off, 0, g.iovs[:0]
	return nil
}

// sendfile is unix.Sendfile; the tests replace it.
var sendfile = unix.Sendfile

// copier copies runs of the input file to the output file with
// sendfile(2), which moves the bytes from one page cache to the other in
// the kernel, across filesystems (copy_file_range(2) refuses a tmpfs
// input and an ext4 output: EXDEV). Clusters that follow one another in
// both files go in one call.
type copier struct {
	src, dst int
	data     []byte // the input's mapping: written from when sendfile is refused
	srcOff   int64
	dstOff   int64
	n        int64
}

func (c *copier) copy(e *entry, b []byte, off int64) error {
	if c.n > 0 && e.srcOff == c.srcOff+c.n && off == c.dstOff+c.n {
		c.n += int64(len(b))
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	c.srcOff, c.dstOff, c.n = e.srcOff, off, int64(len(b))
	return nil
}

func (c *copier) flush() error {
	if c.n == 0 {
		return nil
	}
	if _, err := unix.Seek(c.dst, c.dstOff, io.SeekStart); err != nil {
		return err
	}
	src, left := c.srcOff, c.n
	for left > 0 {
		n, err := sendfile(c.dst, c.src, &src, int(min(left, 1<<30)))
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP {
			// A filesystem without splice: written from the mapping.
			for left > 0 {
				w, err := unix.Pwrite(c.dst, c.data[src:src+left], c.dstOff+(src-c.srcOff))
				if err != nil || w == 0 {
					return fmt.Errorf("writing %d bytes at byte %d: %v", left, c.dstOff+(src-c.srcOff), cmp.Or(err, io.ErrShortWrite))
				}
				src, left = src+int64(w), left-int64(w)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("copying %d bytes from byte %d to byte %d: %w", c.n, c.srcOff, c.dstOff, err)
		}
		if n == 0 {
			return fmt.Errorf("copying %d bytes from byte %d to byte %d: %w", c.n, c.srcOff, c.dstOff, io.ErrUnexpectedEOF)
		}
		left -= int64(n)
	}
	c.n = 0
	return nil
}
