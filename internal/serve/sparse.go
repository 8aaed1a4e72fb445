package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// zeroBuf is what a hole is sent from: holes are never read from disk.
var zeroBuf = make([]byte, 1<<20)

// CopySparse writes n bytes of f from off to w. Data regions are read from
// the file; holes (found with SEEK_DATA/SEEK_HOLE) are written as zeros
// from memory. It returns the bytes written and the bytes read from f. A
// *os.File is positioned with Seek, so each concurrent reader needs its
// own descriptor.
func CopySparse(ctx context.Context, w io.Writer, f *os.File, off, n int64) (written, read int64, err error) {
	fd := int(f.Fd())
	end := off + n
	for off < end {
		if err := ctx.Err(); err != nil {
			return written, read, err
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			data = end // a hole up to the end of the file
		case errors.Is(err, unix.EINVAL):
			data = off // no SEEK_DATA here: everything is data
		case err != nil:
			return written, read, fmt.Errorf("SEEK_DATA in %s at %d: %w", f.Name(), off, err)
		}
		if data > end {
			data = end
		}
		if data > off { // a hole [off, data)
			k, err := writeZeros(w, data-off)
			written += k
			if err != nil {
				return written, read, err
			}
			off = data
			continue
		}
		hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		if err != nil {
			hole = end
		}
		if hole > end {
			hole = end
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return written, read, err
		}
		// A LimitedReader of an *os.File lets net/http use sendfile.
		k, err := io.Copy(w, &io.LimitedReader{R: f, N: hole - off})
		written += k
		read += k
		if err != nil {
			return written, read, err
		}
		if k < hole-off {
			return written, read, fmt.Errorf("%s: short read at %d (file shrank?)", f.Name(), off+k)
		}
		off = hole
	}
	return written, read, nil
}

func writeZeros(w io.Writer, n int64) (int64, error) {
	var done int64
	for done < n {
		k, err := w.Write(zeroBuf[:min(n-done, int64(len(zeroBuf)))])
		done += int64(k)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Allocated is the number of bytes of f's data regions (what a hole-aware
// reader has to read).
func Allocated(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}
