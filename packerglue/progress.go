// Package packerglue holds the Packer glue the plugin's components share:
// progress bars for work that is not a read, the cleanup journal's life
// around a post-processor, input checks. The work itself lives in internal/.
package packerglue

import (
	"io"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// ProgressBar adapts the SDK's reader-based progress bar to work that is
// not a read (copy_file_range, qemu-img): advancing it reads n zero bytes
// through the tracked reader, which is all the bar counts.
type ProgressBar struct {
	tracked io.ReadCloser
	buf     []byte
	done    int64
}

// NewProgressBar shows a bar for total bytes (or units) of work.
func NewProgressBar(ui packersdk.Ui, name string, total int64) *ProgressBar {
	return &ProgressBar{
		tracked: ui.TrackProgress(name, 0, total, io.NopCloser(zeros{})),
		buf:     make([]byte, 1<<20),
	}
}

// Add moves the bar forward by n bytes.
func (p *ProgressBar) Add(n int64) {
	for n > 0 {
		chunk := min(n, int64(len(p.buf)))
		read, err := p.tracked.Read(p.buf[:chunk])
		if err != nil || read == 0 {
			return
		}
		n -= int64(read)
		p.done += int64(read)
	}
}

// Set moves the bar to an absolute position (it never goes back).
func (p *ProgressBar) Set(done int64) {
	if done > p.done {
		p.Add(done - p.done)
	}
}

// percentScale is a percent bar's total: tenths of a percent.
const percentScale = 1000

// NewPercentBar shows a bar for work that reports percent done (qemu-img).
func NewPercentBar(ui packersdk.Ui, name string) *ProgressBar {
	return NewProgressBar(ui, name, percentScale)
}

// SetPercent moves a percent bar to pct (0..100).
func (p *ProgressBar) SetPercent(pct float64) { p.Set(int64(pct * percentScale / 100)) }

// Close removes the bar.
func (p *ProgressBar) Close() { p.tracked.Close() }

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
