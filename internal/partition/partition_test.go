package partition

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// expectFromSfdisk turns sfdisk's view into the Table Read should return,
// including PARTUUIDs as blkid shows them.
func expectFromSfdisk(t *testing.T, path string) *Table {
	t.Helper()
	st, err := fixture.ReadTable(t, path)
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", path, err)
	}
	fi, _ := os.Stat(path)
	pt := st.PartitionTable
	want := &Table{SectorSize: 512, DiskSize: fi.Size()}
	switch pt.Label {
	case "dos":
		want.Kind = MBR
		want.DiskID = fmt.Sprintf("%08s", strings.TrimPrefix(pt.ID, "0x"))
	case "gpt":
		want.Kind = GPT
		want.DiskID = strings.ToLower(pt.ID)
	}
	for _, p := range pt.Partitions {
		n, err := strconv.Atoi(strings.TrimPrefix(p.Node, path))
		if err != nil {
			t.Fatal(err)
		}
		part := Partition{Number: n, Start: p.Start * 512, Size: p.Size * 512, Name: p.Name,
			Bootable: p.Bootable || strings.Contains(p.Attrs, "LegacyBIOSBootable")}
		if want.Kind == MBR {
			typ, _ := strconv.ParseUint(p.Type, 16, 8)
			if isExtended(byte(typ)) || n > 4 {
				continue // containers and logical partitions are not supported
			}
			part.TypeMBR = byte(typ)
			part.UUID = fmt.Sprintf("%s-%02x", want.DiskID, n)
		} else {
			part.TypeGUID = strings.ToLower(p.Type)
			part.UUID = strings.ToLower(p.UUID)
		}
		want.Partitions = append(want.Partitions, part)
	}
	return want
}

func sameTable(t *testing.T, got, want *Table) {
	t.Helper()
	g, _ := json.MarshalIndent(got, "", " ")
	w, _ := json.MarshalIndent(want, "", " ")
	if string(g) != string(w) {
		t.Errorf("table differs\ngot:  %s\nwant: %s", g, w)
	}
}

const (
	mbrScript = "label: dos\nlabel-id: 0x0a0b0c0d\nstart=2048, size=20480, type=83, bootable\nstart=22528, size=10240, type=82\nstart=40960, type=83\n"
	// partition 2 is an extended container with a logical partition 5 inside.
	mbrExtendedScript = "label: dos\nlabel-id: 0x12345678\nstart=2048, size=20480, type=83\nstart=22528, size=10240, type=5\nstart=24576, size=2048, type=83\nstart=40960, type=83\n"
)

var sgdiskArgs = []string{
	"-n", "1:2048:+1M", "-t", "1:ef02", "-c", "1:bios",
	"-n", "3:0:+10M", "-t", "3:ef00", "-c", "3:EFI system",
	"-n", "2:0:0", "-t", "2:8300", "-c", "2:root", "-A", "2:set:2",
	"-u", "2:6e0c0c1e-9f3a-4e8c-a7e5-0f7f5bb1b0a1",
	"-U", "11111111-2222-3333-4444-555555555555",
}

func TestReadFixtures(t *testing.T) {
	needTool(t, "sfdisk", "sgdisk")
	tests := []struct {
		name  string
		size  int64
		build func(t *testing.T, path string)
		parts int
	}{
		{"mbr", 64 << 20, func(t *testing.T, p string) { run(t, mbrScript, "sfdisk", "-q", p) }, 3},
		{"mbr with extended", 64 << 20, func(t *testing.T, p string) { run(t, mbrExtendedScript, "sfdisk", "-q", p) }, 2},
		{"gpt", 64 << 20, func(t *testing.T, p string) { run(t, "", "sgdisk", append(sgdiskArgs, p)...) }, 3},
		{"gpt numbers with gaps", 64 << 20, func(t *testing.T, p string) {
			run(t, "", "sgdisk", "-n", "5:0:+4M", "-n", "9:0:0", p)
		}, 2},
		{"mbr over 2 TiB file holding a small table", 3 << 40, func(t *testing.T, p string) {
			run(t, "label: dos\nstart=2048, size=204800, type=83\n", "sfdisk", "-q", p)
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, tt.size)
			tt.build(t, p)
			got, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Partitions) != tt.parts {
				t.Errorf("%d partitions, want %d", len(got.Partitions), tt.parts)
			}
			sameTable(t, got, expectFromSfdisk(t, p))
		})
	}
}

func TestReadGPTDetails(t *testing.T) {
	needTool(t, "sgdisk")
	p := fixture.SparseFile(t, 64<<20)
	run(t, "", "sgdisk", append(sgdiskArgs, p)...)
	tb, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := tb.ByNumber(2)
	if root.Name != "root" || !root.Bootable || root.UUID != "6e0c0c1e-9f3a-4e8c-a7e5-0f7f5bb1b0a1" ||
		root.TypeGUID != "0fc63daf-8483-4772-8e79-3d69d8477de4" {
		t.Errorf("root partition %+v", root)
	}
	if tb.DiskID != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("disk ID %q", tb.DiskID)
	}
	// blkid agrees on the PARTUUID of the partition as the kernel would see it.
	if _, err := exec.LookPath("blkid"); err == nil {
		out := run(t, "", "blkid", "-p", "-o", "export", p)
		if !strings.Contains(out, "PTUUID="+tb.DiskID) {
			t.Errorf("blkid PTUUID differs: %s", out)
		}
	}
}

func TestReadNone(t *testing.T) {
	tests := []struct {
		name  string
		size  int64
		build func(t *testing.T, p string)
	}{
		{"zeros", 16 << 20, func(*testing.T, string) {}},
		{"tiny", 100, func(*testing.T, string) {}},
		{"ext4 on the whole disk", 64 << 20, func(t *testing.T, p string) {
			needTool(t, "mkfs.ext4")
			run(t, "", "mkfs.ext4", "-q", "-F", p)
		}},
		{"FAT boot sector", 16 << 20, func(t *testing.T, p string) {
			b := make([]byte, 512)
			copy(b[3:], "mkfs.fat")
			copy(b[82:], "FAT32   ")
			b[446] = 0x33 // boot code spills into the entry area: an invalid boot flag
			b[510], b[511] = 0x55, 0xaa
			writeAt(t, p, b, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, tt.size)
			tt.build(t, p)
			got, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != None || len(got.Partitions) != 0 {
				t.Errorf("got %+v, want kind none", got)
			}
		})
	}
}

func writeAt(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestReadErrors(t *testing.T) {
	needTool(t, "sfdisk", "sgdisk")
	mbrDisk := func(t *testing.T) string {
		p := fixture.SparseFile(t, 64<<20)
		run(t, mbrScript, "sfdisk", "-q", p)
		return p
	}
	gptDisk := func(t *testing.T) string {
		p := fixture.SparseFile(t, 64<<20)
		run(t, "", "sgdisk", append(sgdiskArgs, p)...)
		return p
	}
	tests := []struct {
		name  string
		build func(t *testing.T) string
		want  []string
	}{
		{"mbr partition past the end", func(t *testing.T) string {
			p := mbrDisk(t)
			if err := os.Truncate(p, 40<<20); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"partition 3 of", "ends at byte 67108864, past the end of the disk (41943040 bytes)"}},
		{"gpt partition past the end", func(t *testing.T) string {
			p := gptDisk(t)
			if err := os.Truncate(p, 40<<20); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"partition 2 of", "past the end of the disk (41943040 bytes)"}},
		{"mbr partition starting past the end", func(t *testing.T) string {
			p := mbrDisk(t)
			b := make([]byte, 4)
			binary.LittleEndian.PutUint32(b, 1<<20) // partition 2 starts at sector 1Mi = 512 MiB
			writeAt(t, p, b, 446+16+8)
			return p
		}, []string{"partition 2 of", "starts at byte 536870912, past the end of the disk"}},
		{"mbr overlap", func(t *testing.T) string {
			p := mbrDisk(t)
			b := make([]byte, 4)
			binary.LittleEndian.PutUint32(b, 10000) // partition 2 starts inside partition 1
			writeAt(t, p, b, 446+16+8)
			return p
		}, []string{"partitions 1 and 2 of", "overlap"}},
		{"gpt header CRC", func(t *testing.T) string {
			p := gptDisk(t)
			flipByte(t, p, 512+60) // inside the disk GUID
			return p
		}, []string{"GPT of", "bad CRC", "damaged"}},
		{"gpt entries CRC", func(t *testing.T) string {
			p := gptDisk(t)
			flipByte(t, p, 1024+56) // name of partition 1
			return p
		}, []string{"GPT of", "entries", "bad CRC"}},
		{"protective MBR without GPT", func(t *testing.T) string {
			p := gptDisk(t)
			writeAt(t, p, make([]byte, 512), 512)
			return p
		}, []string{"protective MBR", "damaged"}},
		{"4096-byte sector GPT", func(t *testing.T) string {
			p := fixture.SparseFile(t, 64<<20)
			writeAt(t, p, []byte("EFI PART"), 4096)
			return p
		}, []string{"4096-byte sectors"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.build(t)
			tb, err := Read(p)
			if err == nil {
				t.Fatalf("no error; table %+v", tb)
			}
			for _, w := range append(tt.want, p) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			t.Log(err)
		})
	}
}

// lastEnd returns the highest partition end.
func lastEnd(tb *Table) int64 {
	var end int64
	for _, p := range tb.Partitions {
		end = max(end, p.End())
	}
	return end
}

func checkWithTools(t *testing.T, p string, kind string) {
	t.Helper()
	if kind == GPT {
		out := run(t, "", "sgdisk", "-v", p)
		if !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v %s:\n%s", p, out)
		}
	}
	out := run(t, "", "sfdisk", "-V", p)
	if !strings.Contains(out, "No errors detected") {
		t.Errorf("sfdisk -V %s:\n%s", p, out)
	}
}

func TestGrowLast(t *testing.T) {
	needTool(t, "sfdisk", "sgdisk")
	tests := []struct {
		name       string
		kind       string
		build      func(t *testing.T, p string)
		wantNumber int
		newSize    int64
	}{
		{"mbr", MBR, func(t *testing.T, p string) { run(t, mbrScript, "sfdisk", "-q", p) }, 3, 200 << 20},
		{"mbr to exactly 2 TiB", MBR, func(t *testing.T, p string) { run(t, mbrScript, "sfdisk", "-q", p) }, 3, 2 << 40},
		{"gpt", GPT, func(t *testing.T, p string) { run(t, "", "sgdisk", append(sgdiskArgs, p)...) }, 2, 200<<20 + 12345*512},
		{"gpt last partition numbered first", GPT, func(t *testing.T, p string) {
			run(t, "", "sgdisk", "-n", "2:2048:+8M", "-n", "1:0:0", p)
		}, 1, 1 << 30},
		{"gpt over 2 TiB", GPT, func(t *testing.T, p string) { run(t, "", "sgdisk", append(sgdiskArgs, p)...) }, 2, 3 << 40},
		{"gpt not grown: a no-op", GPT, func(t *testing.T, p string) { run(t, "", "sgdisk", append(sgdiskArgs, p)...) }, 2, 64 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, 64<<20)
			tt.build(t, p)
			before, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, tt.newSize); err != nil {
				t.Fatal(err)
			}
			got, err := GrowLast(p)
			if err != nil {
				t.Fatal(err)
			}
			wantEnd := tt.newSize / 512 * 512
			if tt.kind == GPT {
				wantEnd -= 33 * 512
			}
			if got.Number != tt.wantNumber || got.End() != wantEnd {
				t.Errorf("grew partition %d to end at %d, want partition %d ending at %d", got.Number, got.End(), tt.wantNumber, wantEnd)
			}
			after, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			// Everything else is unchanged.
			old, _ := before.ByNumber(got.Number)
			if got.Start != old.Start || got.UUID != old.UUID || got.TypeGUID != old.TypeGUID || got.TypeMBR != old.TypeMBR {
				t.Errorf("grown partition changed identity: %+v -> %+v", old, got)
			}
			if len(after.Partitions) != len(before.Partitions) || after.DiskID != before.DiskID {
				t.Errorf("table changed: %+v -> %+v", before, after)
			}
			for _, q := range before.Partitions {
				if q.Number != got.Number {
					r, _ := after.ByNumber(q.Number)
					if r != q {
						t.Errorf("partition %d changed: %+v -> %+v", q.Number, q, r)
					}
				}
			}
			if lastEnd(after) != wantEnd {
				t.Errorf("last end %d, want %d", lastEnd(after), wantEnd)
			}
			checkWithTools(t, p, tt.kind)
			sameTable(t, after, expectFromSfdisk(t, p))
			if tt.kind == GPT {
				checkProtectiveMBR(t, p, tt.newSize)
			}
		})
	}
}

func checkProtectiveMBR(t *testing.T, p string, size int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	want := uint32(min(size/512-1, 0xffffffff))
	if b[446+4] != 0xee || binary.LittleEndian.Uint32(b[446+12:]) != want {
		t.Errorf("protective MBR entry %x, want type ee size %d", b[446:462], want)
	}
}

func TestGrowLastErrors(t *testing.T) {
	needTool(t, "sfdisk")
	tests := []struct {
		name    string
		script  string
		newSize int64
		want    string
	}{
		{"mbr beyond 2 TiB", mbrScript, 2<<40 + 1<<20, "cannot address more than 2199023255552 bytes"},
		{"extended partition last", "label: dos\nstart=2048, size=20480, type=83\nstart=22528, type=5\nstart=24576, size=2048, type=83\n", 128 << 20, "extended partition"},
		{"no table", "", 128 << 20, "no partition table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, 64<<20)
			if tt.script != "" {
				run(t, tt.script, "sfdisk", "-q", p)
			}
			if err := os.Truncate(p, tt.newSize); err != nil {
				t.Fatal(err)
			}
			_, err := GrowLast(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("err = %v, want one containing %q and the path", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestShrinkLast(t *testing.T) {
	needTool(t, "sfdisk", "sgdisk")
	tests := []struct {
		name       string
		kind       string
		build      func(t *testing.T, p string)
		wantNumber int
		newSize    int64
	}{
		{"mbr", MBR, func(t *testing.T, p string) { run(t, mbrScript, "sfdisk", "-q", p) }, 3, 48 << 20},
		{"gpt", GPT, func(t *testing.T, p string) { run(t, "", "sgdisk", append(sgdiskArgs, p)...) }, 2, 40<<20 + 7*512},
		{"gpt last partition numbered first", GPT, func(t *testing.T, p string) {
			run(t, "", "sgdisk", "-n", "2:2048:+8M", "-n", "1:0:0", p)
		}, 1, 20 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, 64<<20)
			tt.build(t, p)
			before, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			old, _ := before.ByNumber(tt.wantNumber)
			got, err := ShrinkLast(p, tt.newSize, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(p); fi.Size() != tt.newSize {
				t.Errorf("file is %d bytes, want %d", fi.Size(), tt.newSize)
			}
			wantEnd := tt.newSize
			if tt.kind == GPT {
				wantEnd -= 33 * 512
			}
			if got.Number != tt.wantNumber || got.End() != wantEnd || got.Start != old.Start || got.UUID != old.UUID {
				t.Errorf("shrunk partition %+v, want partition %d from %d ending at %d", got, tt.wantNumber, old.Start, wantEnd)
			}
			after, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range before.Partitions {
				if r, _ := after.ByNumber(q.Number); q.Number != got.Number && r != q {
					t.Errorf("partition %d changed: %+v -> %+v", q.Number, q, r)
				}
			}
			checkWithTools(t, p, tt.kind)
			sameTable(t, after, expectFromSfdisk(t, p))
			if tt.kind == GPT {
				checkProtectiveMBR(t, p, tt.newSize)
			}
		})
	}
}

func TestShrinkLastErrors(t *testing.T) {
	needTool(t, "sfdisk", "sgdisk")
	tests := []struct {
		name          string
		gpt           bool
		newSize, keep int64
		want          string
	}{
		{"mbr: filesystem would not fit", false, 40 << 20, 40 << 20, "smaller than the"},
		{"gpt: filesystem would not fit", true, 40 << 20, 40 << 20, "smaller than the"},
		{"mbr: new end before the partition starts", false, 20 << 20, 0, "past the new end"},
		{"gpt: new end before the partition starts", true, 8 << 20, 0, "after the new last usable sector"},
		{"larger than the disk", false, 128 << 20, 0, "larger than the disk"},
		{"not whole sectors", false, 40<<20 + 1, 0, "not a positive multiple"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, 64<<20)
			if tt.gpt {
				run(t, "", "sgdisk", append(sgdiskArgs, p)...)
			} else {
				run(t, mbrScript, "sfdisk", "-q", p)
			}
			sum := fileSum(t, p)
			_, err := ShrinkLast(p, tt.newSize, tt.keep)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("err = %v, want one containing %q and the path", err, tt.want)
			}
			if fileSum(t, p) != sum {
				t.Error("the disk changed although the shrink was refused")
			}
			t.Log(err)
		})
	}
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestCreate(t *testing.T) {
	needTool(t, "sfdisk", "sgdisk")
	tests := []struct {
		name  string
		kind  string
		size  int64
		parts []Spec
		opts  []Option
		check func(t *testing.T, tb *Table)
	}{
		{"gpt bios+esp+root", GPT, 256 << 20, []Spec{
			{Size: 1 << 20, Type: "bios-boot", Name: "bios"},
			{Size: 100 << 20, Type: "esp", Name: "EFI System", UUID: "c0ffee00-0000-4000-8000-000000000001"},
			{Size: 0, Type: "linux", Name: "root", Bootable: true},
		}, []Option{WithDiskID("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE")}, func(t *testing.T, tb *Table) {
			if tb.DiskID != "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee" {
				t.Errorf("disk ID %s", tb.DiskID)
			}
			esp, _ := tb.ByNumber(2)
			if esp.UUID != "c0ffee00-0000-4000-8000-000000000001" || esp.TypeGUID != "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" {
				t.Errorf("esp %+v", esp)
			}
			if root, _ := tb.ByNumber(3); !root.Bootable || root.End() != 256<<20-33*512 {
				t.Errorf("root %+v", root)
			}
		}},
		{"mbr", MBR, 128 << 20, []Spec{
			{Size: 10 << 20, Type: "swap"},
			{Size: 0, Type: "linux", Bootable: true},
		}, []Option{WithDiskID("deadbeef")}, func(t *testing.T, tb *Table) {
			root, _ := tb.ByNumber(2)
			if tb.DiskID != "deadbeef" || root.UUID != "deadbeef-02" || !root.Bootable || root.TypeMBR != 0x83 || root.End() != 128<<20 {
				t.Errorf("table %+v", tb)
			}
		}},
		{"mbr random signature, odd size", MBR, 100<<20 + 7*512, []Spec{{Size: 12345, Type: "83"}, {Type: "linux"}}, nil,
			func(t *testing.T, tb *Table) {
				if tb.DiskID == "00000000" {
					t.Error("zero disk signature")
				}
				if p, _ := tb.ByNumber(2); p.Start != 2<<20 {
					t.Errorf("partition 2 starts at %d, want 1 MiB aligned after partition 1", p.Start)
				}
			}},
		{"gpt over 2 TiB", GPT, 3 << 40, []Spec{{Size: 0, Type: "linux"}}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, tt.size)
			if err := Create(p, tt.kind, tt.parts, tt.opts...); err != nil {
				t.Fatal(err)
			}
			tb, err := Read(p)
			if err != nil {
				t.Fatal(err)
			}
			if tb.Kind != tt.kind || len(tb.Partitions) != len(tt.parts) {
				t.Fatalf("read back %+v", tb)
			}
			for i, q := range tb.Partitions {
				if q.Start%(1<<20) != 0 {
					t.Errorf("partition %d starts at %d: not 1 MiB aligned", q.Number, q.Start)
				}
				if s := tt.parts[i].Size; s != 0 && q.Size != (s+511)/512*512 {
					t.Errorf("partition %d is %d bytes, want %d", q.Number, q.Size, s)
				}
				if q.Name != tt.parts[i].Name {
					t.Errorf("partition %d name %q", q.Number, q.Name)
				}
			}
			checkWithTools(t, p, tt.kind)
			sameTable(t, tb, expectFromSfdisk(t, p))
			if tt.kind == GPT {
				checkProtectiveMBR(t, p, tt.size)
			}
			if tt.check != nil {
				tt.check(t, tb)
			}
		})
	}

	t.Run("mbr over a stale gpt", func(t *testing.T) {
		p := fixture.SparseFile(t, 64<<20)
		if err := Create(p, GPT, []Spec{{Type: "linux"}}); err != nil {
			t.Fatal(err)
		}
		if err := Create(p, MBR, []Spec{{Type: "linux"}}); err != nil {
			t.Fatal(err)
		}
		if tb, err := Read(p); err != nil || tb.Kind != MBR {
			t.Fatalf("Read = %+v, %v; want an MBR", tb, err)
		}
	})

	errTests := []struct {
		name  string
		kind  string
		parts []Spec
		want  string
	}{
		{"too big", GPT, []Spec{{Size: 1 << 30, Type: "linux"}}, "does not fit"},
		{"rest not last", GPT, []Spec{{Type: "linux"}, {Size: 1 << 20, Type: "swap"}}, "only the last partition"},
		{"bios-boot on mbr", MBR, []Spec{{Type: "bios-boot"}}, "no MBR equivalent"},
		{"name on mbr", MBR, []Spec{{Type: "linux", Name: "root"}}, "no partition names"},
		{"five on mbr", MBR, make([]Spec, 5), "at most 4"},
		{"unknown kind", "apm", []Spec{{Type: "linux"}}, "unknown kind"},
		{"unknown type", GPT, []Spec{{Type: "windows"}}, "unknown type"},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, 64<<20)
			err := Create(p, tt.kind, tt.parts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("err = %v, want one containing %q and the path", err, tt.want)
			}
		})
	}
}
