package boottest

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// HeartbeatEvery is how often a boot still under way says so. A Debian
// boot under TCG takes 40-120 s to its login prompt; without these lines
// the build is silent all that time.
const HeartbeatEvery = 15 * time.Second

// kernelBanner is the kernel's first console line, from init/version.c's
// linux_banner ("Linux version 6.1.0-28-amd64 (debian-kernel@...) ...").
var kernelBanner = regexp.MustCompile(`Linux version (\S+)`)

// progress turns what the console shows and the waits still open into
// the boot's milestones, each said once (the kernel's first line, the
// login prompt), and a heartbeat every HeartbeatEvery in between.
type progress struct {
	kernel, prompt bool
	beat           time.Duration // time of the last line printed
}

// lines are what to print at elapsed (since power-on), given the console
// lines read since the last call (seen), the last console line so far
// (last) and the waits not met yet (unmet).
func (p *progress) lines(elapsed time.Duration, seen []string, last string, unmet []string) []string {
	var out []string
	for _, l := range seen {
		if m := kernelBanner.FindStringSubmatch(l); m != nil && !p.kernel {
			p.kernel = true
			out = append(out, fmt.Sprintf("The kernel started %s after power-on (Linux %s)", diskimage.FormatDuration(elapsed), m[1]))
		}
		if loginPrompt.MatchString(l) && !p.prompt {
			p.prompt = true
			out = append(out, fmt.Sprintf("Login prompt on the serial console %s after power-on", diskimage.FormatDuration(elapsed)))
		}
	}
	if len(out) > 0 {
		p.beat = elapsed
		return out
	}
	if elapsed-p.beat < HeartbeatEvery || len(unmet) == 0 {
		return nil
	}
	p.beat = elapsed
	line := fmt.Sprintf("Still booting, %s after power-on: waiting for %s", diskimage.FormatDuration(elapsed), strings.Join(unmet, "; "))
	// GRUB's menu pads its lines with spaces.
	if last = strings.Join(strings.Fields(last), " "); last != "" {
		const max = 60 // the line stays readable in an 80-column terminal's two lines
		if r := []rune(last); len(r) > max {
			last = string(r[:max]) + "..."
		}
		line += "; console: " + last
	} else {
		line += "; nothing on the console yet"
	}
	return []string{line}
}
