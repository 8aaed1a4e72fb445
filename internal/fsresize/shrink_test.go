package fsresize

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func mkfs(t *testing.T, size string, args ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	if out, err := exec.Command("truncate", "-s", size, img).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v: %s", err, out)
	}
	if out, err := exec.Command(args[0], append(args[1:], img)...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return img
}

func TestShrinkExt(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "resize2fs", "e2fsck", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	tree := t.TempDir()
	// Random bytes: mkfs -d leaves zero blocks out as holes.
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(tree, "data"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		size       string
		mkfs       []string
		free       int64
		wantShrink bool
	}{
		{"ext4 with 3 MiB of data", "128M", []string{"mkfs.ext4", "-q", "-F", "-d", tree}, 0, true},
		{"ext4 with room asked for", "128M", []string{"mkfs.ext4", "-q", "-F", "-d", tree}, 16 << 20, true},
		{"ext2, 1 KiB blocks", "32M", []string{"mkfs.ext2", "-q", "-F", "-b", "1024", "-d", tree}, 0, true},
		{"already small: free space asked exceeds what shrinking gains", "16M", []string{"mkfs.ext4", "-q", "-F", "-d", tree}, 64 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := mkfs(t, tt.size, tt.mkfs...)
			before, after, err := ShrinkExt(context.Background(), img, tt.free, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadExtSize(img)
			if err != nil || got != after {
				t.Fatalf("superblock says %+v (%v), ShrinkExt said %+v", got, err, after)
			}
			if shrunk := after.Blocks < before.Blocks; shrunk != tt.wantShrink {
				t.Fatalf("%d -> %d blocks; want shrunk = %v", before.Blocks, after.Blocks, tt.wantShrink)
			}
			if tt.wantShrink {
				// Room for the data and at least the free space asked for.
				if after.Bytes() < 3<<20+tt.free {
					t.Errorf("%d bytes after, less than data (3 MiB) + free (%d)", after.Bytes(), tt.free)
				}
				// Within 1 % of where resize2fs now says the minimum is, plus the room.
				minimum, err := minimumBlocks(context.Background(), img)
				if err != nil {
					t.Fatal(err)
				}
				want := minimum + (tt.free+after.BlockSize-1)/after.BlockSize
				if after.Blocks < want || after.Blocks-want > after.Blocks/100 {
					t.Errorf("%d blocks after; want the minimum %d plus the free space: %d (1 %% slack)", after.Blocks, minimum, want)
				}
			}
			if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
				t.Fatalf("e2fsck -fn after the shrink: %v\n%s", err, out)
			}
			out, _ := exec.Command("debugfs", "-R", "stat /data", img).CombinedOutput()
			if !strings.Contains(string(out), "Size: 3145728") {
				t.Errorf("/data lost its content:\n%s", out)
			}
		})
	}
}

func TestShrinkExtErrors(t *testing.T) {
	tests := []struct{ name, size, mkfs string }{
		{"no filesystem", "16M", "true"},
		{"xfs", "300M", "mkfs.xfs -q -f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exec.LookPath(strings.Fields(tt.mkfs)[0]); err != nil {
				t.Skipf("%s not installed", tt.mkfs)
			}
			img := mkfs(t, tt.size, strings.Fields(tt.mkfs)...)
			sum, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = ShrinkExt(context.Background(), img, 0, nil)
			if err == nil || !strings.Contains(err.Error(), "holds no ext2/3/4 filesystem") {
				t.Fatalf("err = %v, want one saying it is not ext", err)
			}
			if now, err := os.ReadFile(img); err != nil || !bytes.Equal(now, sum) {
				t.Errorf("the image changed (%v)", err)
			}
		})
	}
}
