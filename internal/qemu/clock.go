package qemu

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// GuestClockCommand prints the guest's clock as seconds since the epoch,
// once with nanoseconds (GNU date), then in whole seconds, which every
// date prints (busybox's may know no %N). It needs no privilege.
const GuestClockCommand = "date +%s.%N; date +%s"

var (
	clockNanos   = regexp.MustCompile(`^([0-9]{1,12})\.([0-9]{1,9})$`)
	clockSeconds = regexp.MustCompile(`^([0-9]{1,12})$`)
)

// ParseGuestClock reads GuestClockCommand's output: the first line that is
// seconds and a fraction (1 to 9 digits), else the first line of whole
// seconds, rounded up to the next second: the clock was read somewhere in
// that second, and a write of the boot's in the same second must not pass
// for a later one (a provisioner's write in it is then taken for the
// boot's: the safe side). It fails, quoting the output, when no line is
// either.
func ParseGuestClock(out string) (time.Time, error) {
	var whole string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if m := clockNanos.FindStringSubmatch(line); m != nil {
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			nsec, _ := strconv.ParseInt((m[2] + "00000000")[:9], 10, 64)
			return time.Unix(sec, nsec), nil
		}
		if whole == "" && clockSeconds.MatchString(line) {
			whole = line
		}
	}
	if whole == "" {
		if len(out) > 200 {
			out = out[:200] + "..."
		}
		return time.Time{}, fmt.Errorf("%q is not the guest's clock in seconds since the epoch (from %q)", out, GuestClockCommand)
	}
	sec, _ := strconv.ParseInt(whole, 10, 64)
	return time.Unix(sec+1, 0), nil
}
