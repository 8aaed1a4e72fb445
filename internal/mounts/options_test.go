package mounts

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSplitOptions(t *testing.T) {
	tests := []struct {
		flags     uintptr
		opts      []string
		wantFlags uintptr
		wantData  string
	}{
		{0, nil, 0, ""},
		{0, []string{"noatime"}, unix.MS_NOATIME, ""},
		{0, []string{"subvol=home", "noatime", "compress=zstd:1"}, unix.MS_NOATIME, "subvol=home,compress=zstd:1"},
		{unix.MS_RDONLY, []string{"rw", "errors=remount-ro"}, 0, "errors=remount-ro"},
		{0, []string{"defaults", "", "nodev", "nosuid", "noexec", "discard"}, unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC, "discard"},
		{unix.MS_NOATIME, []string{"atime", "relatime"}, unix.MS_RELATIME, ""},
	}
	for _, tt := range tests {
		flags, data := SplitOptions(tt.flags, tt.opts)
		if flags != tt.wantFlags || data != tt.wantData {
			t.Errorf("SplitOptions(%#x, %q) = %#x, %q; want %#x, %q", tt.flags, tt.opts, flags, data, tt.wantFlags, tt.wantData)
		}
	}
}
