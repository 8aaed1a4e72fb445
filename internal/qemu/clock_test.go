package qemu

import (
	"strings"
	"testing"
	"time"
)

func TestParseGuestClock(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      time.Time
		err       string
	}{
		{"GNU date", "1767225600.123456789\n1767225600\n", time.Unix(1767225600, 123456789), ""},
		{"short fraction", "1767225600.5\n1767225600\n", time.Unix(1767225600, 500000000), ""},
		{"carriage returns and blanks", "\r\n 1767225600.000000001\r\n1767225600\r\n", time.Unix(1767225600, 1), ""},
		{"busybox without %N: next second", "1767225600.%N\n1767225600\n", time.Unix(1767225601, 0), ""},
		{"busybox printing N", "1767225600.N\n1767225600\n", time.Unix(1767225601, 0), ""},
		{"only whole seconds", "1767225600\n", time.Unix(1767225601, 0), ""},
		{"a login banner first", "Welcome!\n1767225600.25\n1767225600\n", time.Unix(1767225600, 250000000), ""},
		{"no date", "sh: date: not found\n", time.Time{}, `"sh: date: not found\n" is not the guest's clock`},
		{"empty", "", time.Time{}, `"" is not the guest's clock`},
		{"ten fraction digits", "1767225600.1234567890\n", time.Time{}, "is not the guest's clock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseGuestClock(tc.out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("ParseGuestClock(%q) = %v, %v; want error %q", tc.out, got, err, tc.err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Errorf("ParseGuestClock(%q) = %v, %v; want %v", tc.out, got, err, tc.want)
			}
		})
	}
}
