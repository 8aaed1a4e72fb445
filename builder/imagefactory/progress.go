package imagefactory

import (
	"io"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// progressBar adapts the SDK's reader-based progress bar to work that is
// not a read (copy_file_range, qemu-img): advancing it reads n zero bytes
// through the tracked reader, which is all the bar counts.
type progressBar struct {
	tracked io.ReadCloser
	buf     []byte
	done    int64
}

func newProgressBar(ui packersdk.Ui, name string, total int64) *progressBar {
	return &progressBar{
		tracked: ui.TrackProgress(name, 0, total, io.NopCloser(zeros{})),
		buf:     make([]byte, 1<<20),
	}
}

// Add moves the bar forward by n bytes.
func (p *progressBar) Add(n int64) {
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
func (p *progressBar) Set(done int64) {
	if done > p.done {
		p.Add(done - p.done)
	}
}

// Close removes the bar.
func (p *progressBar) Close() { p.tracked.Close() }

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
