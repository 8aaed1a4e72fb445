package fsresize

import (
	"strings"
	"testing"
)

// Output of btrfs-progs v6.2's `btrfs filesystem show --raw` (measured).
func TestParseDeviceSize(t *testing.T) {
	tests := []struct {
		out     string
		want    int64
		wantErr string
	}{
		{out: "Label: 'fedora'  uuid: 912ca962-6d26-43d6-b672-d37d5b08540d\n\tTotal devices 1 FS bytes used 8536064\n\tdevid    1 size 419430400 used 92274688 path /dev/loop0\n\n", want: 419430400},
		{out: "Label: none  uuid: x\n\tTotal devices 2 FS bytes used 1\n\tdevid    1 size 4 used 1 path /dev/loop0\n\tdevid    2 size 4 used 1 path /dev/loop1\n", wantErr: "not a filesystem of one device"},
		{out: "Label: none  uuid: x\n\tTotal devices 1 FS bytes used 1\n", wantErr: "no size for devid 1"},
	}
	for _, tt := range tests {
		got, err := parseDeviceSize(tt.out)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseDeviceSize: err %v, want %q", err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseDeviceSize = %d, %v; want %d", got, err, tt.want)
		}
	}
}
