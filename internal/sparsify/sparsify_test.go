package sparsify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

const MiB = fixture.MiB

func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// setup gives the test a journal and a private TMPDIR (where Trim makes
// its mount points), and returns that directory for the leak check. Call
// it after fixture.NewDisk: the fixture cache lives in the TMPDIR of the
// first call.
func setup(t *testing.T) (*cleanup.Journal, string) {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	j, err := cleanup.Open(t.TempDir(), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Errorf("closing journal: %v", err)
		}
	})
	return j, tmp
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	n, err := Allocated(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writeRandom writes n random bytes to w.
func writeRandom(t *testing.T, w io.Writer, n int64) {
	t.Helper()
	if _, err := io.CopyN(w, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
}

// dirty fills a file with 100 MiB of random data on partition p of img,
// syncs, deletes it and unmounts: the blocks stay allocated in the image.
func dirty(t *testing.T, img string, p fixture.Partition) {
	t.Helper()
	dev := strings.TrimSpace(run(t, "losetup", "--find", "--show", "--offset", fmt.Sprint(p.Offset),
		"--sizelimit", fmt.Sprint(p.Size), img))
	defer run(t, "losetup", "-d", dev)
	dir := t.TempDir()
	opts := "noinit_itable"
	switch p.FS {
	case "xfs":
		opts = "nouuid"
	case "btrfs":
		opts = "defaults"
	}
	run(t, "mount", "-t", p.FS, "-o", opts, dev, dir)
	defer run(t, "umount", dir)
	f, err := os.Create(filepath.Join(dir, "junk"))
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, f, 100*MiB)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	run(t, "sync", "-f", dir)
}

func TestTrimDirtyFilesystem(t *testing.T) {
	requireRoot(t, "losetup", "mount", "umount")
	for _, tc := range []fixture.DiskOptions{
		{RootFS: "ext4"},
		{RootFS: "ext4", Table: "gpt", SeparateBoot: true},
		{RootFS: "ext4", Table: "none"},
		{RootFS: "xfs"},
		{RootFS: "btrfs"},
	} {
		name := tc.RootFS + "-" + tc.Table
		if tc.Table == "" {
			name += "mbr"
		}
		t.Run(name, func(t *testing.T) {
			disk := fixture.NewDisk(t, tc)
			j, tmp := setup(t)
			root := disk.Root()
			files := []string{"/etc/fstab", "/bin/busybox"}
			want := map[string][]byte{}
			for _, f := range files {
				want[f] = fixture.ReadFileFromPartition(t, disk.Path, root, f)
			}
			clean := allocated(t, disk.Path)
			dirty(t, disk.Path, root)
			dirtied := allocated(t, disk.Path)
			if dirtied < clean+90*MiB {
				t.Fatalf("writing 100 MiB grew the image only from %d to %d bytes allocated", clean, dirtied)
			}
			snap := fixture.LeakSnapshot()

			res, err := Trim(context.Background(), disk.Path, j, nil, func(s string) { t.Log(s) })
			if err != nil {
				t.Fatal(err)
			}
			snap.AssertNoLeaksIn(t, filepath.Dir(disk.Path), tmp)
			t.Logf("clean %d, dirty %d; Trim: before %d, after %d (%+v)", clean, dirtied, res.Before, res.After, res.Partitions)

			if res.Before != dirtied || res.After != allocated(t, disk.Path) {
				t.Errorf("Result before/after %d/%d, want %d/%d", res.Before, res.After, dirtied, allocated(t, disk.Path))
			}
			// Free space back to holes: what is left is the live data and
			// metadata the clean image had, give or take 2% of the disk.
			if slack := disk.Size / 50; res.After > clean+slack {
				t.Errorf("after Trim %d bytes allocated; the clean image had %d (allowed up to %d)", res.After, clean, clean+slack)
			}
			for _, p := range disk.Partitions {
				fixture.FsckPartition(t, disk.Path, p)
			}
			for _, f := range files {
				if got := fixture.ReadFileFromPartition(t, disk.Path, root, f); !bytes.Equal(got, want[f]) {
					t.Errorf("%s changed by Trim", f)
				}
			}
			if len(res.Partitions) != len(disk.Partitions) {
				t.Fatalf("Result has %d partitions, the disk %d: %+v", len(res.Partitions), len(disk.Partitions), res.Partitions)
			}
			for i, pr := range res.Partitions {
				if pr.Number != disk.Partitions[i].Number || pr.FS != disk.Partitions[i].FS || pr.Action != ActionTrimmed {
					t.Errorf("partition %d: got %+v, want %s trimmed", disk.Partitions[i].Number, pr, disk.Partitions[i].FS)
				}
			}
			if res.Partitions[len(res.Partitions)-1].Trimmed < 90*MiB {
				t.Errorf("root trimmed only %d bytes", res.Partitions[len(res.Partitions)-1].Trimmed)
			}
		})
	}
}

// region is a byte range of a test disk.
type region struct{ start, end int64 }

func hashRegion(t *testing.T, img string, r region) string {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, r.start, r.end-r.start)); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func hashZeros(n int64) string {
	h := sha256.New()
	io.CopyN(h, zeros{}, n)
	return fmt.Sprintf("%x", h.Sum(nil))
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// hasData tells whether any block of r is allocated (SEEK_DATA).
func hasData(t *testing.T, img string, r region) bool {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off, err := unix.Seek(int(f.Fd()), r.start, unix.SEEK_DATA)
	if err == unix.ENXIO {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return off < r.end
}

func fillRandom(t *testing.T, img string, r region) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(r.start, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, f, r.end-r.start)
}

// mixedDisk makes a 128 MiB MBR disk by hand: vfat 1-17 MiB, swap
// 18-50 MiB, ext4 50-120 MiB, with a gap before the swap and at the end.
// Every free byte (the gaps, the swap area past its header) holds random
// data, as does the boot loader area between the MBR and the first
// partition.
func mixedDisk(t *testing.T) (img string, vfat, swap, ext4 region, gaps []region) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "mixed.raw")
	vfat, swap, ext4 = region{1 * MiB, 17 * MiB}, region{18 * MiB, 50 * MiB}, region{50 * MiB, 120 * MiB}
	gaps = []region{{17 * MiB, 18 * MiB}, {120 * MiB, 128 * MiB}}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 128*MiB); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("label: dos\nunit: sectors\n\n")
	for _, p := range []struct {
		r   region
		typ string
	}{{vfat, "ef"}, {swap, "82"}, {ext4, "83"}} {
		fmt.Fprintf(&script, "start=%d, size=%d, type=%s\n", p.r.start/512, (p.r.end-p.r.start)/512, p.typ)
	}
	cmd := exec.Command("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", img)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	fillRandom(t, img, region{512, 1 * MiB})
	for _, g := range gaps {
		fillRandom(t, img, g)
	}
	side := func(r region) string {
		p := filepath.Join(t.TempDir(), "side")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, r.end-r.start); err != nil {
			t.Fatal(err)
		}
		return p
	}
	splice := func(src string, r region) {
		run(t, "dd", "if="+src, "of="+img, "bs=1M", "conv=notrunc", "oflag=seek_bytes",
			fmt.Sprintf("seek=%d", r.start), "status=none")
	}
	v := side(vfat)
	run(t, "mkfs.vfat", "-n", "ESP", v)
	splice(v, vfat)
	// A used swap area: random pages past the header page.
	s := side(swap)
	fillRandom(t, s, region{4096, swap.end - swap.start})
	run(t, "mkswap", "-L", "swp", s)
	splice(s, swap)
	run(t, "mkfs.ext4", "-q", "-F", "-E", fmt.Sprintf("offset=%d", ext4.start), img, fmt.Sprintf("%dk", (ext4.end-ext4.start)/1024))
	return img, vfat, swap, ext4, gaps
}

func TestTrimSwapVfatAndGaps(t *testing.T) {
	requireRoot(t, "sfdisk", "mkswap", "mkfs.vfat", "mkfs.ext4", "e2fsck", "dd", "blkid")
	j, tmp := setup(t)
	img, vfat, swap, ext4, gaps := mixedDisk(t)
	head := region{0, vfat.start}
	swapHead := region{swap.start, swap.start + SwapHeaderKeep}
	keep := map[string]region{"boot area": head, "vfat partition": vfat, "swap header": swapHead}
	want := map[string]string{}
	for name, r := range keep {
		want[name] = hashRegion(t, img, r)
	}
	snap := fixture.LeakSnapshot()

	res, err := Trim(context.Background(), img, j, nil, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	snap.AssertNoLeaksIn(t, filepath.Dir(img), tmp)
	t.Logf("before %d, after %d, gaps %d: %+v", res.Before, res.After, res.Gaps, res.Partitions)

	for name, r := range keep {
		if got := hashRegion(t, img, r); got != want[name] {
			t.Errorf("the %s [%d, %d) changed", name, r.start, r.end)
		}
	}
	for name, r := range map[string]region{"swap past its header": {swapHead.end, swap.end}, "gap 1": gaps[0], "gap 2": gaps[1]} {
		if hasData(t, img, r) {
			t.Errorf("%s [%d, %d) still has data", name, r.start, r.end)
		}
	}
	out := run(t, "blkid", "-p", "-o", "export", "-O", fmt.Sprint(swap.start), "-S", fmt.Sprint(swap.end-swap.start), img)
	if !strings.Contains(out, "TYPE=swap") || !strings.Contains(out, "LABEL=swp") {
		t.Errorf("swap signature lost after Trim: blkid says\n%s", out)
	}
	fixture.E2fsck(t, img, ext4.start)

	wantParts := []struct {
		fs, action string
	}{{"vfat", "skipped: "}, {"swap", ActionSwap}, {"ext4", ActionTrimmed}}
	if len(res.Partitions) != len(wantParts) {
		t.Fatalf("got %d partitions, want %d: %+v", len(res.Partitions), len(wantParts), res.Partitions)
	}
	for i, w := range wantParts {
		pr := res.Partitions[i]
		if pr.Number != i+1 || pr.FS != w.fs || !strings.HasPrefix(pr.Action, w.action) {
			t.Errorf("partition %d: got %+v, want %s %q", i+1, pr, w.fs, w.action)
		}
	}
	if !res.Partitions[0].Skipped() {
		t.Errorf("vfat partition not reported skipped: %+v", res.Partitions[0])
	}
	if got, want := res.Partitions[1].Trimmed, swap.end-swap.start-SwapHeaderKeep; got != want {
		t.Errorf("swap: Trimmed %d, want %d", got, want)
	}
	if res.Gaps != 9*MiB {
		t.Errorf("Gaps %d, want %d", res.Gaps, 9*MiB)
	}
	// Freed: the swap pages and the gaps, 41 MiB less the swap header.
	if freed := res.Before - res.After; freed < 40*MiB {
		t.Errorf("freed only %d bytes (before %d, after %d)", freed, res.Before, res.After)
	}
}

// TestTrimGPTBackupHeader punches the free space after the last partition
// of a GPT disk but not the backup header and entries behind it.
func TestTrimGPTBackupHeader(t *testing.T) {
	requireRoot(t, "sgdisk")
	disk := fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt", ESP: true})
	j, tmp := setup(t)
	root := disk.Root()
	backup := region{disk.Size - 33*512, disk.Size}
	tail := region{root.Offset + root.Size, backup.start}
	fillRandom(t, disk.Path, tail)
	wantBackup := hashRegion(t, disk.Path, backup)
	snap := fixture.LeakSnapshot()

	res, err := Trim(context.Background(), disk.Path, j, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap.AssertNoLeaksIn(t, filepath.Dir(disk.Path), tmp)
	// The backup entries start on a sector, not a block: the last block
	// of the tail is zeroed, not a hole.
	if whole := (region{tail.start, tail.end &^ 4095}); hasData(t, disk.Path, whole) {
		t.Errorf("free tail [%d, %d) still has data", whole.start, whole.end)
	}
	if hashRegion(t, disk.Path, tail) != hashZeros(tail.end-tail.start) {
		t.Errorf("free tail [%d, %d) does not read as zeros", tail.start, tail.end)
	}
	if hashRegion(t, disk.Path, backup) != wantBackup {
		t.Errorf("backup GPT changed")
	}
	if res.Gaps != tail.end-tail.start {
		t.Errorf("Gaps %d, want %d", res.Gaps, tail.end-tail.start)
	}
	if len(res.Partitions) != 2 || !res.Partitions[0].Skipped() || res.Partitions[0].FS != "vfat" || res.Partitions[1].Action != ActionTrimmed {
		t.Errorf("partitions: got %+v, want the ESP skipped and the root trimmed", res.Partitions)
	}
	out := run(t, "sgdisk", "-v", disk.Path)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v after Trim:\n%s", out)
	}
}

// TestTrimKeepsExtendedPartition: the logical partitions of an MBR
// extended container are not in the table Trim reads, so the container
// must not be taken for free space.
func TestTrimKeepsExtendedPartition(t *testing.T) {
	requireRoot(t, "sfdisk", "mkfs.ext4")
	img := filepath.Join(t.TempDir(), "extended.raw")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64*MiB); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", img)
	cmd.Stdin = strings.NewReader("label: dos\nunit: sectors\n\n" +
		"start=2048, size=32768, type=83\n" + // 1-17 MiB
		"start=40960, size=81920, type=5\n" + // 20-60 MiB, extended
		"start=43008, size=40960, type=83\n") // logical, 21-41 MiB
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	run(t, "mkfs.ext4", "-q", "-F", "-E", fmt.Sprintf("offset=%d", 1*MiB), img, "16M")
	logical := region{21 * MiB, 41 * MiB}
	gap := region{17 * MiB, 20 * MiB}
	fillRandom(t, img, logical)
	fillRandom(t, img, gap)
	want := hashRegion(t, img, region{20 * MiB, 60 * MiB})
	disk := filepath.Dir(img)
	j, tmp := setup(t)
	snap := fixture.LeakSnapshot()

	res, err := Trim(context.Background(), img, j, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap.AssertNoLeaksIn(t, disk, tmp)
	if hashRegion(t, img, region{20 * MiB, 60 * MiB}) != want {
		t.Errorf("the extended partition changed")
	}
	if hasData(t, img, gap) {
		t.Errorf("the gap before the extended partition still has data")
	}
	if res.Gaps != gap.end-gap.start+4*MiB {
		t.Errorf("Gaps %d, want %d (17-20 MiB and 60-64 MiB)", res.Gaps, gap.end-gap.start+4*MiB)
	}
	fixture.E2fsck(t, img, 1*MiB)
}

// TestTrimCancelled: a Trim cancelled after its first partition, with
// every partition attached, holds nothing afterwards.
func TestTrimCancelled(t *testing.T) {
	requireRoot(t)
	disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
	j, tmp := setup(t)
	snap := fixture.LeakSnapshot()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var trimmed int
	partDone = func(pr PartResult) {
		if pr.Action == ActionTrimmed {
			trimmed++
			cancel()
		}
	}
	t.Cleanup(func() { partDone = func(PartResult) {} })
	res, err := Trim(ctx, disk.Path, j, nil, nil)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Trim cancelled midway: got %v, want context.Canceled", err)
	}
	if trimmed != 1 || len(res.Partitions) != 1 {
		t.Errorf("cancelled after the first partition: %d trimmed, result %+v", trimmed, res.Partitions)
	}
	snap.AssertNoLeaksIn(t, filepath.Dir(disk.Path), tmp)
}

func TestTrimNotADisk(t *testing.T) {
	requireRoot(t)
	img := fixture.NotADisk(t)
	j, _ := setup(t)
	_, err := Trim(context.Background(), img, j, nil, nil)
	if err == nil || !strings.Contains(err.Error(), img) {
		t.Fatalf("Trim of a file that is no disk: got %v, want an error naming %s", err, img)
	}
}
