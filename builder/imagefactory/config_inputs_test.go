package imagefactory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckInputs: packer validate refuses a local base_image or
// source_rootfs that cannot be read, in one sentence naming it; a URL is
// not looked at.
func TestCheckInputs(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "base.img")
	if err := os.WriteFile(img, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nothing-here.img")
	unreadable := filepath.Join(dir, "locked")
	if err := os.Mkdir(unreadable, 0o755); err != nil {
		t.Fatal(err)
	}
	lockedFile := filepath.Join(unreadable, "base.img")
	if err := os.WriteFile(lockedFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(unreadable, 0o755) })
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"base image", Config{BaseImage: img}, ""},
		{"file URL", Config{BaseImage: "file://" + img}, ""},
		{"URL", Config{BaseImage: "https://example.com/nothing.img"}, ""},
		{"tree", Config{SourceRootfs: dir}, ""},
		{"missing base image", Config{BaseImage: missing},
			"base_image " + missing + " does not exist (an image another build of the same template makes must exist before packer starts: build them one at a time with -only)"},
		{"missing file URL", Config{BaseImage: "file://" + missing},
			"base_image " + missing + " does not exist (an image another build of the same template makes must exist before packer starts: build them one at a time with -only)"},
		{"missing relative base image", Config{BaseImage: "nothing-here.img"},
			"base_image nothing-here.img does not exist (a relative path is relative to the directory packer runs in; an image another build of the same template makes must exist before packer starts: build them one at a time with -only)"},
		{"base image a directory", Config{BaseImage: dir}, "base_image " + dir + " is a directory; give a disk image file"},
		{"missing source_rootfs", Config{SourceRootfs: missing},
			"source_rootfs " + missing + " does not exist (an image another build of the same template makes must exist before packer starts: build them one at a time with -only)"},
	}
	if os.Geteuid() != 0 { // root reads anything
		tests = append(tests, struct {
			name string
			c    Config
			want string
		}{"unreadable", Config{BaseImage: lockedFile}, "base_image " + lockedFile + " cannot be read: permission denied"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.checkInputs()
			got := ""
			if err != nil {
				got = strings.TrimSpace(strings.TrimPrefix(err.Error(), "1 error(s) occurred:\n\n* "))
			}
			if got != tt.want {
				t.Errorf("checkInputs() = %q, want %q", got, tt.want)
			}
		})
	}
}
