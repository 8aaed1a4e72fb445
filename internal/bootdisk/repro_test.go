package bootdisk

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// TestMakeReproducible makes each layout from two trees with the same
// files made a second apart (other ctimes, another mke2fs clock, another
// go-diskfs clock): one Source gives equal disks whose identifiers are the
// Source's, another epoch differs, and a nil Source stays random.
func TestMakeReproducible(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mkfs -d of a root-owned tree)")
	}
	t1 := t.TempDir()
	fixture.BusyboxTree(t, t1)
	time.Sleep(1100 * time.Millisecond)
	t2 := t.TempDir()
	fixture.BusyboxTree(t, t2)
	src := repro.New(1700000000, "repro-test")
	make := func(t *testing.T, tree, table string, s *repro.Source) (string, Result) {
		t.Helper()
		disk := filepath.Join(t.TempDir(), "disk.raw")
		res, err := Make(context.Background(), Options{Disk: disk, Tree: tree, Table: table, FSType: rootfs.Ext4, Free: 8 << 20, Repro: s})
		if err != nil {
			t.Fatal(err)
		}
		return disk, res
	}
	for _, c := range []struct {
		table  string
		diskID string // what sfdisk --json says the disk's ID is
	}{
		{partition.GPT, strings.ToUpper(src.UUID("gpt/disk-guid").String())},
		{partition.MBR, fmt.Sprintf("0x%08x", src.Uint32("mbr/disk-id"))},
	} {
		t.Run(c.table, func(t *testing.T) {
			a, res := make(t, t1, c.table, src)
			b, _ := make(t, t2, c.table, src)
			fixture.RequireSameDisks(t, a, b)
			fixture.E2fsck(t, a, res.Root.Start)

			tab, err := fixture.ReadTable(t, a)
			if err != nil {
				t.Fatal(err)
			}
			if got := tab.PartitionTable.ID; !strings.EqualFold(got, c.diskID) {
				t.Errorf("disk ID %s, want the Source's %s", got, c.diskID)
			}
			if c.table == partition.GPT {
				for i, p := range tab.PartitionTable.Partitions {
					if want := src.UUID(fmt.Sprintf("gpt/part/%d", i+1)).String(); !strings.EqualFold(p.UUID, want) {
						t.Errorf("partition %d GUID %s, want %s", i+1, p.UUID, want)
					}
				}
				if v, err := exec.Command("sgdisk", "-v", a).CombinedOutput(); err != nil || !strings.Contains(string(v), "No problems found") {
					t.Errorf("sgdisk -v (the CRCs): %v %s", err, v)
				}
			}
			if want := src.UUID("ext4/root/uuid").String(); res.RootUUID != want {
				t.Errorf("root UUID %s, want %s", res.RootUUID, want)
			}
			tbl, err := partition.Read(a)
			if err != nil {
				t.Fatal(err)
			}
			esp := tbl.Partitions[0]
			if c.table == partition.GPT {
				esp = tbl.Partitions[1]
			}
			id := src.Uint32("fat/esp/volume-id")
			want := fmt.Sprintf("%04X-%04X", id>>16, id&0xffff)
			out, _ := exec.Command("blkid", "-p", "-o", "value", "-s", "UUID", "-O", fmt.Sprint(esp.Start), a).CombinedOutput()
			if got := strings.TrimSpace(string(out)); got != want {
				t.Errorf("ESP volume ID %q, want %s", got, want)
			}
			fat := filepath.Join(t.TempDir(), "esp")
			if out, err := exec.Command("dd", "if="+a, "of="+fat, "bs=512", fmt.Sprintf("skip=%d", esp.Start/512), fmt.Sprintf("count=%d", esp.Size/512), "status=none").CombinedOutput(); err != nil {
				t.Fatalf("dd: %v %s", err, out)
			}
			if out, err := exec.Command("fsck.fat", "-n", fat).CombinedOutput(); err != nil {
				t.Errorf("fsck.fat -n: %v\n%s", err, out)
			}
			// mtools reads the entries' times: the epoch, 2023-11-14 22:13:20 UTC.
			out, err = exec.Command("mdir", "-i", fat, "::/EFI/BOOT").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "2023-11-14  22:13") {
				t.Errorf("mdir ::/EFI/BOOT: want the epoch's date and time: %v\n%s", err, out)
			}

			if other, _ := make(t, t1, c.table, repro.New(1700000001, "repro-test")); len(fixture.DiffDisks(t, a, other)) == 0 {
				t.Error("another epoch gave the same disk")
			}
		})
	}
	t.Run("nil Source stays random", func(t *testing.T) {
		a, _ := make(t, t1, partition.GPT, nil)
		b, _ := make(t, t1, partition.GPT, nil)
		ta, _ := fixture.ReadTable(t, a)
		tb, _ := fixture.ReadTable(t, b)
		if ta.PartitionTable.ID == tb.PartitionTable.ID {
			t.Errorf("two disks without a Source share the disk GUID %s", ta.PartitionTable.ID)
		}
	})
}
