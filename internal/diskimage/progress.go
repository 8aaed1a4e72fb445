package diskimage

import (
	"io"
	"sync/atomic"
)

// WrapFunc lets the caller watch a long operation by wrapping a reader whose
// bytes are the operation's progress; total is the number of bytes it will
// yield. Packer's ui.TrackProgress has this shape once its name argument is
// bound, so the builder can plug its progress bar in without this package
// knowing Packer. A nil WrapFunc means no progress reporting.
type WrapFunc func(total int64, r io.ReadCloser) io.ReadCloser

// ProgressFunc adapts a plain callback to a WrapFunc. done counts bytes
// consumed so far, total is the expected count.
func ProgressFunc(fn func(done, total int64)) WrapFunc {
	if fn == nil {
		return nil
	}
	return func(total int64, r io.ReadCloser) io.ReadCloser {
		return &countingReader{r: r, total: total, fn: fn}
	}
}

type countingReader struct {
	r     io.ReadCloser
	done  atomic.Int64
	total int64
	fn    func(done, total int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.fn(c.done.Add(int64(n)), c.total)
	}
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }
