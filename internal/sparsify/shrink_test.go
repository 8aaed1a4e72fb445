package sparsify

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// withData adds 8 MiB of random data to a fixture tree, so the root
// filesystem has something to keep.
func withData(dir string) {
	b := make([]byte, 8*MiB)
	rand.Read(b)
	os.WriteFile(filepath.Join(dir, "data"), b, 0o644)
	os.Link(filepath.Join(dir, "data"), filepath.Join(dir, "data-link"))
}

func TestShrink(t *testing.T) {
	requireRoot(t, "resize2fs", "e2fsck", "sfdisk", "sgdisk")
	tests := []struct {
		name  string
		opts  fixture.DiskOptions
		free  int64
		check string // the table checker
	}{
		{"mbr with /boot before the root", fixture.DiskOptions{Table: "mbr", SeparateBoot: true, Tree: withData}, 0, "sfdisk"},
		{"gpt with an ESP", fixture.DiskOptions{Table: "gpt", ESP: true, Tree: withData}, 32 * MiB, "sgdisk"},
		{"whole-disk filesystem", fixture.DiskOptions{Table: "none", Tree: withData}, 4 * MiB, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk := fixture.NewDisk(t, tt.opts)
			j, tmp := setup(t)
			before := fixture.LeakSnapshot()
			root := disk.Root()
			manifest := fixture.Manifest(t, disk.Path, root)

			res, err := Shrink(context.Background(), disk.Path, j, ShrinkOptions{FreeSpace: tt.free}, func(s string) { t.Log(s) })
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", res)
			fi, _ := os.Stat(disk.Path)
			if res.DiskAfter != fi.Size() || res.DiskAfter >= res.DiskBefore || res.DiskAfter%alignment != 0 {
				t.Errorf("disk %d -> %d bytes (file %d): want smaller, whole MiB", res.DiskBefore, res.DiskAfter, fi.Size())
			}
			if res.FSAfter >= res.FSBefore || res.Partition != root.Number {
				t.Errorf("root filesystem %d -> %d bytes on partition %d, want it smaller on %d", res.FSBefore, res.FSAfter, res.Partition, root.Number)
			}
			// The room asked for is there: free blocks in the filesystem.
			if free := freeBytes(t, disk.Path, root.Offset); free < tt.free {
				t.Errorf("%d bytes free in the filesystem, want at least %d", free, tt.free)
			}
			// No more disk than the filesystem (and a GPT backup) needs.
			if slack := res.DiskAfter - (root.Offset + res.FSAfter); slack < 0 || slack >= alignment+gptBackup {
				t.Errorf("%d bytes after the filesystem's end", slack)
			}
			switch tt.check {
			case "sfdisk":
				if out := run(t, "sfdisk", "-V", disk.Path); !strings.Contains(out, "No errors detected") {
					t.Errorf("sfdisk -V:\n%s", out)
				}
			case "sgdisk":
				if out := run(t, "sgdisk", "-v", disk.Path); !strings.Contains(out, "No problems found") {
					t.Errorf("sgdisk -v:\n%s", out)
				}
			}
			root.Size = res.DiskAfter - root.Offset
			if tt.check == "sgdisk" {
				root.Size -= gptBackup
			}
			fixture.FsckPartition(t, disk.Path, root)
			if diff := fixture.ManifestDiff(manifest, fixture.Manifest(t, disk.Path, root), 20); len(diff) > 0 {
				t.Errorf("the files changed:\n%s", strings.Join(diff, "\n"))
			}
			for _, p := range disk.Partitions {
				if p.Number != root.Number && p.FS != "vfat" {
					fixture.FsckPartition(t, disk.Path, p)
				}
			}
			before.AssertNoLeaksIn(t, tmp, filepath.Dir(disk.Path))
		})
	}
}

// freeBytes is the free space of the ext4 at offset, from its superblock.
func freeBytes(t *testing.T, img string, offset int64) int64 {
	h := fixture.Ext4Header(t, img, offset)
	return h["Free blocks"] * h["Block size"]
}

func TestShrinkRefused(t *testing.T) {
	requireRoot(t, "resize2fs", "e2fsck", "sfdisk")
	tests := []struct {
		name string
		disk func(t *testing.T) string
		want string
	}{
		{"xfs root", func(t *testing.T) string { return fixture.NewDisk(t, fixture.DiskOptions{RootFS: "xfs"}).Path }, "cannot shrink: only ext2/3/4"},
		{"root not the last partition", func(t *testing.T) string {
			d := fixture.NewDisk(t, fixture.DiskOptions{Table: "mbr", Size: 128 * MiB})
			// Grow the file by 16 MiB without touching the table, then add
			// a partition behind the root one.
			if err := os.Truncate(d.Path, 144*MiB); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sfdisk", "--append", "--no-reread", "-q", d.Path)
			cmd.Stdin = strings.NewReader("start=262144, type=83\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sfdisk --append: %v\n%s", err, out)
			}
			return d.Path
		}, "is not the last partition (partition 2 ends after it)"},
		{"no root", func(t *testing.T) string { return fixture.NoRoot(t) }, "no root filesystem found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk := tt.disk(t)
			j, tmp := setup(t)
			before := fixture.LeakSnapshot()
			sum := fixture.Sha256(t, disk)
			_, err := Shrink(context.Background(), disk, j, ShrinkOptions{}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one saying %q", err, tt.want)
			}
			t.Log(err)
			if fixture.Sha256(t, disk) != sum {
				t.Error("the disk changed although the shrink was refused")
			}
			before.AssertNoLeaksIn(t, tmp, filepath.Dir(disk))
		})
	}
}
