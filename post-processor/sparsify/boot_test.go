package sparsify_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestAccShrunkImageBoots: a bootable Debian 12 GPT disk made from a root
// tree, shrunk by imagefactory-sparsify (root filesystem, last partition,
// GPT backup moved, file truncated) and converted to a zstd qcow2, still
// boots with OVMF, whose firmware reads the moved GPT, to a login prompt.
// Before the boot, the output is read from outside: a smaller disk, its
// GPT backup header at the new last LBA (signature and CRC32s read by the
// test, and sgdisk -v), the partitions inside the usable area, and the
// root ext4 no larger than its partition and clean.
func TestAccShrunkImageBoots(t *testing.T) {
	const diskSize = 3 << 30
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	tarball := fixture.DebianRootfs(t, true)
	h := fixture.Packer(t)
	before := fixture.LeakSnapshot()
	h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+filepath.Join(h.Base, "state"))
	res := h.Build(t, `
source "imagefactory" "t" {
  source_rootfs    = "`+tarball+`"
  partition_table  = "gpt"
  disk_size        = "`+fmt.Sprint(diskSize)+`"
  output_directory = "out"
  mount_path       = "${path.cwd}/mnt"
}
build {
  sources = ["source.imagefactory.t"]
  post-processor "imagefactory-sparsify" {
    format      = "qcow2"
    compression = "zstd"
    shrink      = true
    free_space  = "32M"
  }
}
`, nil)
	if res.ExitCode != 0 {
		t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	if !strings.Contains(res.Output, "Shrank the root filesystem") {
		t.Fatalf("nothing shrunk:\n%s", res.Output)
	}
	img := filepath.Join(h.Dir, "out", "t.qcow2")
	before.AssertNoLeaksIn(t, h.Base)
	checkShrunk(t, img, diskSize)
	console := fixture.BootToLogin(t, img, fixture.BootOptions{UEFI: true})
	if !strings.Contains(console, "login:") {
		t.Errorf("no login prompt:\n%s", console)
	}
}

// checkShrunk checks the shrunk qcow2 img, made from a disk of was bytes,
// from a raw copy.
func checkShrunk(t *testing.T, img string, was int64) {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", img).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", img, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize <= 0 || info.VirtualSize >= was || info.VirtualSize%512 != 0 {
		t.Fatalf("the shrunk disk is %d bytes, want fewer than the %d it was, in whole sectors", info.VirtualSize, was)
	}
	raw := filepath.Join(t.TempDir(), "t.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", img, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if out, err := exec.Command("sgdisk", "-v", raw).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v of the shrunk disk: %v\n%s", err, out)
	}
	last := info.VirtualSize/512 - 1
	primary, backup := fixture.ReadGPTHeader(t, raw, 1), fixture.ReadGPTHeader(t, raw, last)
	if primary.AlternateLBA != uint64(last) || backup.MyLBA != uint64(last) || backup.AlternateLBA != 1 {
		t.Errorf("the primary header's backup is at LBA %d, the backup says it is at %d and its primary at %d; the disk's last LBA is %d",
			primary.AlternateLBA, backup.MyLBA, backup.AlternateLBA, last)
	}
	if backup.LastUsableLBA != primary.LastUsableLBA || backup.LastUsableLBA+33 != uint64(last) || !backup.SameEntries(primary) {
		t.Errorf("the backup does not mirror the primary: last usable %d and %d (disk's last LBA %d), same entries %v",
			primary.LastUsableLBA, backup.LastUsableLBA, last, backup.SameEntries(primary))
	}
	tab, err := fixture.ReadTable(t, raw)
	if err != nil || len(tab.PartitionTable.Partitions) == 0 {
		t.Fatalf("sfdisk reads no table: %v", err)
	}
	var root struct{ start, size int64 }
	for _, p := range tab.PartitionTable.Partitions {
		if p.Start < int64(primary.FirstUsableLBA) || p.Start+p.Size-1 > int64(primary.LastUsableLBA) {
			t.Errorf("partition %s (%d+%d sectors) is outside the usable LBAs %d-%d", p.Node, p.Start, p.Size, primary.FirstUsableLBA, primary.LastUsableLBA)
		}
		if p.Start > root.start {
			root.start, root.size = p.Start, p.Size
		}
	}
	// The root is the last partition (the only one the shrink moves the end of).
	hdr := fixture.Ext4Header(t, raw, root.start*512)
	if fsBytes := hdr["Block count"] * hdr["Block size"]; fsBytes == 0 || fsBytes > root.size*512 {
		t.Errorf("the root ext4 is %d bytes, its partition %d", fsBytes, root.size*512)
	}
	fixture.E2fsck(t, raw, root.start*512)
}
