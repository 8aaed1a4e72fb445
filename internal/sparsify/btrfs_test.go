package sparsify

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fsresize"
)

// TestShrinkBtrfs shrinks the Fedora-like disk's btrfs, mounted, to the
// kernel's floor of 256 MiB: the partition and the disk follow, the
// subvolumes keep their files, the filesystem checks clean.
func TestShrinkBtrfs(t *testing.T) {
	requireRoot(t, "btrfs", "sfdisk", "sgdisk")
	disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: fixture.Fedora, Size: 640 * MiB, Tree: withData})
	j, tmp := setup(t)
	before := fixture.LeakSnapshot()
	root := disk.Root()
	manifest := fixture.Manifest(t, disk.Path, root) // the top level: every subvolume

	res, err := Shrink(context.Background(), disk.Path, j, ShrinkOptions{}, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.FS != "btrfs" || res.Partition != root.Number || res.FSBefore != root.Size/4096*4096 || res.FSAfter != fsresize.BtrfsMinSize {
		t.Errorf("shrank %s on partition %d from %d to %d bytes; want btrfs on %d from %d to %d",
			res.FS, res.Partition, res.FSBefore, res.FSAfter, root.Number, root.Size, fsresize.BtrfsMinSize)
	}
	fi, _ := os.Stat(disk.Path)
	if fi.Size() != res.DiskAfter || res.DiskAfter != alignUp(root.Offset+res.FSAfter+gptBackup) {
		t.Errorf("disk %d bytes (file %d), want %d", res.DiskAfter, fi.Size(), alignUp(root.Offset+res.FSAfter+gptBackup))
	}
	if out := run(t, "sgdisk", "-v", disk.Path); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	root.Size = res.FSAfter
	fixture.FsckPartition(t, disk.Path, root)
	if diff := fixture.ManifestDiff(manifest, fixture.Manifest(t, disk.Path, root), 20); len(diff) > 0 {
		t.Errorf("the files changed:\n%s", strings.Join(diff, "\n"))
	}
	fixture.WithReadOnlySubvolume(t, disk.Path, root, "", func(top string) {
		list := fixture.Btrfs(t, "subvolume", "list", top)
		if !strings.Contains(list, " path root\n") || !strings.Contains(list, " path home\n") {
			t.Errorf("subvolumes after the shrink:\n%s", list)
		}
		if _, err := os.Stat(filepath.Join(top, "home", fixture.HomeMarkerFile)); err != nil {
			t.Error(err)
		}
	})
	before.AssertNoLeaksIn(t, tmp, filepath.Dir(disk.Path))
}
