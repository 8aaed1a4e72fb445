package diskimage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression is the compression wrapped around a downloaded image.
type Compression string

// Compressions DetectCompression recognises.
const (
	NoCompression Compression = "none"
	Gzip          Compression = "gzip"
	XZ            Compression = "xz"
	Zstd          Compression = "zstd"
)

var compressionMagic = []struct {
	c     Compression
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b}},
	{XZ, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
}

// DetectCompression tells the compression of a file by its magic bytes.
func DetectCompression(path string) (Compression, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("detect compression: %w", err)
	}
	defer f.Close()
	head := make([]byte, 6)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("detect compression: read %s: %w", path, err)
	}
	for _, m := range compressionMagic {
		if bytes.HasPrefix(head[:n], m.magic) {
			return m.c, nil
		}
	}
	return NoCompression, nil
}

// sparseBlock is the unit of hole detection: an all-zero block of this size
// is skipped instead of written. 64 KiB matches qcow2's default cluster and
// is large enough that the zero test costs little.
const sparseBlock = 64 << 10

// Decompress writes the decompressed content of src to dst, leaving holes
// where the content is zero, so a 4 GiB raw image holding 1 GiB of data
// costs 1 GiB of disk. wrap (may be nil) wraps the compressed input, whose
// size is known up front, for progress reporting. The output is written to
// dst+".part" and renamed into place only on success.
func Decompress(ctx context.Context, src, dst string, wrap WrapFunc) (err error) {
	kind, err := DetectCompression(src)
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}

	var compressed io.ReadCloser = in
	if wrap != nil {
		compressed = wrap(st.Size(), in)
		defer compressed.Close()
	}
	plain, closeReader, err := decompressor(kind, compressed)
	if err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	defer closeReader()

	part := dst + ".part"
	out, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	defer func() {
		if out != nil {
			out.Close()
		}
		if err != nil {
			os.Remove(part)
		}
	}()

	if _, err := writeSparse(ctx, out, plain); err != nil {
		return fmt.Errorf("decompress %s (%s) to %s: %w", src, kind, dst, err)
	}
	if err := out.Close(); err != nil {
		out = nil
		return fmt.Errorf("decompress %s: close %s: %w", src, part, err)
	}
	out = nil
	if err := os.Rename(part, dst); err != nil {
		return fmt.Errorf("decompress %s: %w", src, err)
	}
	return nil
}

// decompressor reads kind-compressed data from r (plain data for
// NoCompression). Call close when done.
func decompressor(kind Compression, r io.Reader) (plain io.Reader, close func(), err error) {
	buffered := bufio.NewReaderSize(r, 1<<20)
	switch kind {
	case Gzip:
		zr, err := gzip.NewReader(buffered)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case XZ:
		// xz(1) where it is installed: measured here on a 1 GiB raw
		// image holding 256 MiB of random data, ulikunitz/xz takes 12.8 s
		// and `xz -dc` 2.7 s (it decompresses the blocks of a
		// multi-threaded stream in parallel).
		if path, err := exec.LookPath("xz"); err == nil {
			return startTool(r, path, "-dc", "-T0")
		}
		xr, err := xz.NewReader(buffered)
		if err != nil {
			return nil, nil, fmt.Errorf("xz: %w", err)
		}
		return xr, func() {}, nil
	case Zstd:
		// zstd(1) where it is installed, as for xz: on the bench's 4 GiB
		// image holding 256 MiB (bench/decompress.sh), klauspost/compress
		// took 4.8 s and `zstd -dc` 2.7 s.
		if path, err := exec.LookPath("zstd"); err == nil {
			return startTool(r, path, "-dcq")
		}
		zr, err := zstd.NewReader(buffered, zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return buffered, func() {}, nil // not compressed: still worth a sparse copy
}

// startTool runs a decompressing tool with r on its stdin; its stdout is
// the plain data. A tool that exits non-zero makes the read that reaches
// the end fail with its message (a truncated or damaged stream), instead
// of a short, clean EOF. close kills it if it is still running.
func startTool(r io.Reader, path string, args ...string) (io.Reader, func(), error) {
	cmd := exec.Command(path, args...)
	cmd.Stdin = r
	stderr := &headBuffer{limit: 4096}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	tr := &toolReader{cmd: cmd, out: out, stderr: stderr}
	return tr, func() {
		if !tr.waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}, nil
}

type toolReader struct {
	cmd    *exec.Cmd
	out    io.Reader
	stderr *headBuffer
	waited bool
}

func (t *toolReader) Read(p []byte) (int, error) {
	n, err := t.out.Read(p)
	if err == io.EOF && !t.waited {
		t.waited = true
		if werr := t.cmd.Wait(); werr != nil {
			return n, fmt.Errorf("%s: %v: %s", filepath.Base(t.cmd.Path), werr, strings.TrimSpace(t.stderr.String()))
		}
	}
	return n, err
}

// DecompressedHead returns the first n bytes of path's content once
// decompressed (fewer if it is shorter), to tell what a compressed file
// holds (a tar archive, a filesystem) without decompressing all of it.
func DecompressedHead(path string, n int) ([]byte, error) {
	kind, err := DetectCompression(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	plain, closeReader, err := decompressor(kind, f)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", path, err)
	}
	defer closeReader()
	head := make([]byte, n)
	m, err := io.ReadFull(plain, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decompress %s: %w", path, err)
	}
	return head[:m], nil
}

// writeSparse copies r to the start of out, seeking over all-zero blocks,
// and sets out's size to the number of bytes read (the final truncate makes
// a trailing hole part of the file). It checks ctx between blocks.
func writeSparse(ctx context.Context, out *os.File, r io.Reader) (int64, error) {
	buf := make([]byte, sparseBlock)
	zero := make([]byte, sparseBlock)
	var off int64
	for i := 0; ; i++ {
		if i%256 == 0 { // every 16 MiB
			if err := ctx.Err(); err != nil {
				return off, err
			}
		}
		n, rerr := fill(r, buf)
		if n > 0 {
			if !bytes.Equal(buf[:n], zero[:n]) {
				if err := writeRuns(out, buf[:n], zero, off); err != nil {
					return off, err
				}
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return off, rerr
		}
	}
	if err := out.Truncate(off); err != nil {
		return off, fmt.Errorf("truncate %s: %w", out.Name(), err)
	}
	return off, nil
}

// holeBlock is the smallest hole writeSparse leaves: the filesystem's
// block (4 KiB on ext4, xfs and btrfs here), as cp --sparse=always does;
// zero blocks between data in one sparseBlock stay holes too.
const holeBlock = 4 << 10

// writeRuns writes the runs of non-zero holeBlock blocks of buf at off.
func writeRuns(out *os.File, buf, zero []byte, off int64) error {
	for i := 0; i < len(buf); {
		if bytes.Equal(buf[i:min(i+holeBlock, len(buf))], zero[:min(holeBlock, len(buf)-i)]) {
			i += holeBlock
			continue
		}
		j := i + holeBlock
		for j < len(buf) && !bytes.Equal(buf[j:min(j+holeBlock, len(buf))], zero[:min(holeBlock, len(buf)-j)]) {
			j += holeBlock
		}
		j = min(j, len(buf))
		if _, err := out.WriteAt(buf[i:j], off+int64(i)); err != nil {
			return fmt.Errorf("write %s: %w", out.Name(), err)
		}
		i = j
	}
	return nil
}

// fill reads until buf is full or r ends. Unlike io.ReadFull it keeps a
// decompressor's io.ErrUnexpectedEOF (a truncated download) an error
// instead of confusing it with a short last block.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
