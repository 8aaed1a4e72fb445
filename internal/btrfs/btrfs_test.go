package btrfs

import (
	"reflect"
	"strings"
	"testing"
)

// Lines as btrfs-progs v6.2 prints them (measured on this machine).
func TestParseList(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []Subvolume
		wantErr string
	}{
		{name: "empty", out: "", want: nil},
		{
			name: "fedora",
			out:  "ID 256 gen 10 top level 5 path root\nID 257 gen 9 top level 5 path home\n",
			want: []Subvolume{{256, 5, "root"}, {257, 5, "home"}},
		},
		{
			name: "opensuse nested, a space in a name, -a prefix",
			out: "ID 256 gen 7 top level 5 path @\n" +
				"ID 257 gen 7 top level 256 path @/.snapshots\n" +
				"ID 258 gen 7 top level 257 path <FS_TREE>/@/.snapshots/1/snap shot\n",
			want: []Subvolume{{256, 5, "@"}, {257, 256, "@/.snapshots"}, {258, 257, "@/.snapshots/1/snap shot"}},
		},
		{name: "garbage", out: "ERROR: not a btrfs filesystem\n", wantErr: "unexpected line"},
		{name: "bad number", out: "ID x gen 7 top level 5 path @\n", wantErr: "unexpected numbers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseList(tt.out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseList = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseDefault(t *testing.T) {
	tests := []struct {
		out  string
		want Subvolume
	}{
		{"ID 5 (FS_TREE)\n", TopLevel},
		{"ID 259 gen 12 top level 258 path @/.snapshots/1/snapshot\n", Subvolume{259, 258, "@/.snapshots/1/snapshot"}},
	}
	for _, tt := range tests {
		got, err := parseDefault(tt.out)
		if err != nil || got != tt.want {
			t.Errorf("parseDefault(%q) = %v, %v; want %v", tt.out, got, err, tt.want)
		}
	}
	if _, err := parseDefault("nonsense"); err == nil {
		t.Error("parseDefault accepted nonsense")
	}
}

func TestNamed(t *testing.T) {
	subs := []Subvolume{{256, 5, "root"}, {257, 5, "@"}, {258, 257, "@/home"}}
	tests := []struct {
		opts    string
		want    Subvolume
		ok      bool
		wantErr string
	}{
		{opts: "defaults", ok: false},
		{opts: "subvol=root,compress=zstd:1", want: subs[0], ok: true},
		{opts: "subvol=/root", want: subs[0], ok: true},
		{opts: "subvol=/@/home", want: subs[2], ok: true},
		{opts: "subvol=@/home/", want: subs[2], ok: true},
		{opts: "subvol=/", want: TopLevel, ok: true},
		{opts: "subvolid=258", want: subs[2], ok: true},
		{opts: "subvolid=5", want: TopLevel, ok: true},
		{opts: "subvol=root,subvolid=257", want: subs[1], ok: true}, // the ID wins, as in the kernel
		{opts: "subvol=var", wantErr: "subvol=var: the filesystem has no such subvolume"},
		{opts: "subvolid=999", wantErr: "subvolid=999: the filesystem has no such subvolume"},
		{opts: "subvolid=x", wantErr: "not a number"},
	}
	for _, tt := range tests {
		got, ok, err := Named(strings.Split(tt.opts, ","), subs)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Named(%s): err = %v, want %q", tt.opts, err, tt.wantErr)
			}
			continue
		}
		if err != nil || ok != tt.ok || got != tt.want {
			t.Errorf("Named(%s) = %v, %v, %v; want %v, %v", tt.opts, got, ok, err, tt.want, tt.ok)
		}
	}
}
