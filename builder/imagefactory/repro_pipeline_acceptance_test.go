package imagefactory_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// reproPipeline is issue 16's pipeline: a bootable GPT disk from the
// cached debootstrap tree (the one of TestAccBootstrapBoots and the
// example), a shell provisioner writing a fixed file (under a fixed script
// name: Packer's default, script_NNNN.sh, is random and its name would stay
// in /tmp's directory block), scrub, then sparsify to a zstd qcow2 that
// keeps the scrubbed raw disk beside it. The epoch comes from the
// environment (SOURCE_DATE_EPOCH), as reproducible-builds.org has it.
var reproPipeline = treeTemplate(`
  bootstrap {
    tool    = "debootstrap"
    suite   = "bookworm"
    variant = "minbase"
    include = `+bootstrapInclude+`
  }
  format = "raw"
`, `
  provisioner "shell" {
    remote_file = "repro.sh"
    inline      = ["echo reproducible > /etc/imagefactory-repro"]
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {
      format              = "qcow2"
      compression         = "zstd"
      keep_input_artifact = true
    }
  }
`)

// TestAccReproduciblePipeline: two builds with the same SOURCE_DATE_EPOCH
// give the same sha256 for the raw disk and for the qcow2; a third with
// another epoch differs in both. The output boots, and every UUID that
// fstab and grub.cfg name is one of the disk's filesystems or partitions.
func TestAccReproduciblePipeline(t *testing.T) {
	requireQemu(t)
	a := newAcc(t)
	env := a.Env
	build := func(name, epoch string) (raw, qcow2 string) {
		t.Helper()
		a.Env = append(append([]string(nil), env...), "SOURCE_DATE_EPOCH="+epoch)
		out := filepath.Join(a.Dir, name)
		res := mustBuild(t, a, reproPipeline, map[string]string{"out": out})
		t.Logf("build %s (SOURCE_DATE_EPOCH=%s): %s", name, epoch, res.Duration)
		if !strings.Contains(res.Output, "Reproducible: SOURCE_DATE_EPOCH "+epoch) {
			t.Errorf("sparsify did not take the build's epoch:\n%s", res.Output)
		}
		return filepath.Join(out, "t.raw"), filepath.Join(out, "t.qcow2")
	}
	raw1, qcow1 := build("first", "1767225600")
	time.Sleep(1100 * time.Millisecond) // every time the builds could write differs
	raw2, qcow2 := build("second", "1767225600")
	raw3, qcow3 := build("other-epoch", "1767225601")
	a.Env = env

	same := true
	for _, p := range [][2]string{{raw1, raw2}, {qcow1, qcow2}} {
		if s1, s2 := fixture.Sha256(t, p[0]), fixture.Sha256(t, p[1]); s1 != s2 {
			same = false
			t.Errorf("same epoch, different bytes: %s %s, %s %s", s1, p[0], s2, p[1])
		} else {
			t.Logf("sha256 %s: %s (both builds)", filepath.Base(p[0]), s1)
		}
	}
	if !same {
		t.Errorf("where the raw disks differ:\n%s", describeDiff(t, raw1, raw2))
	}
	for _, p := range [][2]string{{raw1, raw3}, {qcow1, qcow3}} {
		if fixture.Sha256(t, p[0]) == fixture.Sha256(t, p[1]) {
			t.Errorf("another epoch gave the same bytes: %s and %s", p[0], p[1])
		}
	}
	checkIdentifiers(t, raw1)
	a.assertNoLeaksHere(t)
	waitNoTCGBoot(t)
	fixture.BootToLogin(t, qcow1, fixture.BootOptions{})
}

// uuidRE matches what grub.cfg names a filesystem or partition by: RFC
// 9562 UUIDs, and FAT volume IDs (XXXX-XXXX).
var uuidRE = regexp.MustCompile(`(?i)\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{4}-[0-9a-f]{4})\b`)

// checkIdentifiers reads every partition's filesystem UUID and label
// (blkid) and partition GUID (sfdisk), then fails for a source in the
// root's /etc/fstab (UUID=, PARTUUID=, LABEL=) or a UUID in its
// /boot/grub/grub.cfg that names nothing on the disk.
func checkIdentifiers(t *testing.T, raw string) {
	t.Helper()
	tab, err := fixture.ReadTable(t, raw)
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", raw, err)
	}
	known := map[string]string{} // "UUID=...", "PARTUUID=...", "LABEL=..." -> what
	ss := tab.PartitionTable.SectorSize
	for i, p := range tab.PartitionTable.Partitions {
		known["PARTUUID="+strings.ToLower(p.UUID)] = fmt.Sprintf("partition %d's GUID", i+1)
		for _, tag := range []string{"UUID", "LABEL"} {
			out, _ := exec.Command("blkid", "-p", "-O", fmt.Sprint(p.Start*ss), "-s", tag, "-o", "value", raw).Output()
			if v := strings.TrimSpace(string(out)); v != "" {
				if tag == "UUID" {
					v = strings.ToLower(v)
				}
				known[tag+"="+v] = fmt.Sprintf("partition %d's filesystem %s", i+1, tag)
			}
		}
	}
	check := func(file, id string) {
		if what, ok := known[id]; ok {
			t.Logf("%s: %s is %s", file, id, what)
		} else {
			t.Errorf("%s names %s, which is no filesystem or partition of the disk (%v)", file, id, known)
		}
	}
	root := lastPartition(t, raw, "ext4")
	fstab := readOut(t, raw, root, "/etc/fstab")
	n := 0
	for _, line := range strings.Split(fstab, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || !strings.Contains(f[0], "=") {
			continue
		}
		tag, v, _ := strings.Cut(f[0], "=")
		if tag != "LABEL" {
			v = strings.ToLower(v)
		}
		check("/etc/fstab", tag+"="+v)
		n++
	}
	if n == 0 {
		t.Errorf("/etc/fstab names no filesystem by UUID, PARTUUID or LABEL:\n%s", fstab)
	}
	grub := readOut(t, raw, root, "/boot/grub/grub.cfg")
	ids := uuidRE.FindAllString(grub, -1)
	if len(ids) == 0 {
		t.Errorf("grub.cfg names no UUID:\n%s", grub)
	}
	for _, id := range ids {
		id = strings.ToLower(id)
		if _, ok := known["UUID="+id]; ok {
			check("/boot/grub/grub.cfg", "UUID="+id)
		} else {
			check("/boot/grub/grub.cfg", "PARTUUID="+id)
		}
	}
}

// describeDiff lists where two disk images of one size differ, as runs
// of differing bytes placed in their partitions (cmp -l, sfdisk).
func describeDiff(t *testing.T, a, b string) string {
	t.Helper()
	tab, _ := fixture.ReadTable(t, a)
	ss := tab.PartitionTable.SectorSize
	where := func(off int64) string {
		for i, p := range tab.PartitionTable.Partitions {
			if off >= p.Start*ss && off < (p.Start+p.Size)*ss {
				return fmt.Sprintf("partition %d +%d (block %d of 4 KiB)", i+1, off-p.Start*ss, (off-p.Start*ss)/4096)
			}
		}
		return "outside the partitions"
	}
	out, _ := exec.Command("sh", "-c", fmt.Sprintf("cmp -l %q %q | awk '{print $1-1}' | head -200000", a, b)).Output()
	var runs []string
	var start, last int64 = -1, -1
	flush := func() {
		if start >= 0 {
			runs = append(runs, fmt.Sprintf("  bytes %d-%d (%d): %s", start, last, last-start+1, where(start)))
		}
	}
	for _, l := range strings.Fields(string(out)) {
		var off int64
		fmt.Sscan(l, &off)
		if off > last+64 {
			flush()
			start = off
		}
		last = off
	}
	flush()
	if len(runs) > 40 {
		runs = append(runs[:40], fmt.Sprintf("  ... %d runs in all", len(runs)))
	}
	return strings.Join(runs, "\n")
}

// waitNoTCGBoot waits until no other QEMU guest runs on the machine (the
// machine's rule: one TCG boot at a time), for at most 15 minutes.
func waitNoTCGBoot(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Second) {
		if out, _ := exec.Command("pgrep", "-a", "qemu-system").Output(); len(out) == 0 {
			return
		}
	}
	t.Logf("another QEMU guest still runs after 15 minutes; booting all the same")
}
