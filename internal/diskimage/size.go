package diskimage

import (
	"fmt"
	"math"
	"math/big"
	"os"
	"strings"
	"time"
)

// binary units: K, M, G, T, P are powers of 1024 whether written "G", "GB"
// or "GiB", as qemu-img and Packer's disk_size read them.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
	"p": 1 << 50, "pb": 1 << 50, "pib": 1 << 50,
}

// ParseSize reads a size such as "4G", "4GiB", "512M", "1.5G" or "10240"
// (bytes). Units are binary. The result must be a whole number of bytes.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit K, M, G, T (binary, e.g. 4G or 512MiB)", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: %q is not a number", s, num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return r.Num().Int64(), nil
}

// FormatSize writes a byte count for a person to read, with an IEC unit
// always: "4 GiB" when exact, else the largest unit with two decimals
// ("1.50 GiB"), "512 B" below 1 KiB. (Config values keep ParseSize's
// short forms, "4G"; this is for messages.)
func FormatSize(n int64) string {
	units := []struct {
		s string
		v int64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n >= u.v || -n >= u.v {
			if n%u.v == 0 {
				return fmt.Sprintf("%d %s", n/u.v, u.s)
			}
			return fmt.Sprintf("%.2f %s", float64(n)/float64(u.v), u.s)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// FormatDuration writes a duration for a person to read, in seconds
// always, as the example's summary does: one decimal from 1 s ("62.4s",
// "75.0s"), three below ("0.009s").
func FormatDuration(d time.Duration) string {
	if d >= time.Second || d <= -time.Second {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// Grow enlarges a raw image file to newSize bytes. The new space is a hole:
// growing costs nothing until written. It refuses to shrink (that would cut
// off data) and refuses non-raw images (their size is not the file size).
func Grow(path string, newSize int64) error {
	if newSize <= 0 || newSize == math.MaxInt64 {
		return fmt.Errorf("grow %s: invalid size %d", path, newSize)
	}
	format, err := Detect(path)
	if err != nil {
		return err
	}
	if format != Raw {
		return fmt.Errorf("grow %s: it is a %s image; only raw images are grown by truncation", path, format)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("grow image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	switch {
	case newSize < st.Size():
		return fmt.Errorf("grow %s: disk_size %s is smaller than the image's %s (%d < %d bytes); images are never shrunk",
			path, FormatSize(newSize), FormatSize(st.Size()), newSize, st.Size())
	case newSize == st.Size():
		return nil
	}
	if err := f.Truncate(newSize); err != nil {
		return fmt.Errorf("grow %s to %s: %w", path, FormatSize(newSize), err)
	}
	return f.Close()
}
