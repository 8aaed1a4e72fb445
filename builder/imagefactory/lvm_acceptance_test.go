package imagefactory_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// lvmWrites writes one file into every filesystem of the LVM layout, a log
// the scrub removes, and the root filesystem's size as the build saw it.
const lvmWrites = `
  provisioner "shell" {
    inline = [
      "echo root > /factory-root",
      "echo 0123456789abcdef0123456789abcdef > /etc/machine-id",
      "echo var > /var/factory-var",
      "echo var_log > /var/log/factory-var_log",
      "echo old log > /var/log/messages",
      "echo home > /home/factory-home",
      "echo tmp > /tmp/factory-tmp",
      "echo boot > /boot/factory-boot",
      "df -k / | tail -n 1 | awk '{print $2}' > /root/size-kib",
    ]
  }
`

// lvmLayoutOf reads where each LV of the output lies with the real lvm
// tools (under a private configuration, on a loop device of the PV): an
// inspection that does not go through package lvm.
func lvmLayoutOf(t *testing.T, img string, pv fixture.Partition) (lvs map[string]fixture.Partition, seqno string) {
	t.Helper()
	dev, detach := attachRO(t, img, pv)
	defer detach()
	l := fixture.NewPrivateLVM(t, dev)
	l.Run(t, "vgck", fixture.LVMVG)
	peStart := strings.TrimSpace(l.Run(t, "pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", dev))
	start, err := strconv.ParseInt(peStart, 10, 64)
	if err != nil {
		t.Fatalf("pe_start %q", peStart)
	}
	out := l.Run(t, "lvs", "--noheadings", "--separator", ":", "-o", "lv_name,seg_pe_ranges,vg_seqno", fixture.LVMVG)
	lvs = map[string]fixture.Partition{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		// root:/dev/loop7:32-177:2
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 4 {
			t.Fatalf("lvs line %q", line)
		}
		var from, to int64
		if _, err := fmt.Sscanf(f[2], "%d-%d", &from, &to); err != nil {
			t.Fatalf("lvs range %q: %v", f[2], err)
		}
		lvs[f[0]] = fixture.Partition{Offset: pv.Offset + start + from*fixture.LVMExtentSize, Size: (to - from + 1) * fixture.LVMExtentSize}
		seqno = f[3]
	}
	return lvs, seqno
}

// attachRO attaches p of img read-only with losetup.
func attachRO(t *testing.T, img string, p fixture.Partition) (dev string, detach func()) {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", "--read-only",
		"--offset", fmt.Sprint(p.Offset), "--sizelimit", fmt.Sprint(p.Size), img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	return dev, func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	}
}

// assertNoOwnLeaks is assertNoLeaks scoped to this build's own files (its
// loop devices' backing files, mounts and processes under a.Base), so that
// another build running on the machine at the same time is not counted.
func assertNoOwnLeaks(t *testing.T, a *acc) {
	t.Helper()
	a.assertNoLeaksHere(t)
}

// TestAccLVM builds on the RHEL/CIS-like disk (VG rhel, five linear LVs)
// with disk_size growth, a shell provisioner writing into every mounted
// filesystem, then imagefactory-scrub and imagefactory-sparsify; the
// output is inspected with the real lvm tools and fsck.
func TestAccLVM(t *testing.T) {
	a := newAcc(t)
	disk := fixture.LVMDisk(t)
	baseSum := fixture.Sha256(t, disk.Path)
	host := fixture.HostLVMState(t)
	newSize := disk.Size + 256*fixture.MiB
	res := mustBuild(t, a, template(fmt.Sprintf("  disk_size = %q", strconv.FormatInt(newSize, 10)), lvmWrites+`
  post-processors {
    post-processor "imagefactory-scrub" {
      operations = ["defaults", "-tmp-files"]
    }
    post-processor "imagefactory-sparsify" {}
  }
`), map[string]string{"base": disk.Path})
	for _, want := range []string{
		"LV rhel/root (", "an LVM physical volume of volume group rhel", "LVs var, var_log, home, tmp, root",
		"Grew the PV of VG rhel from 114 to 178 extents, LV rhel/root from 80 to 146 extents, and its xfs filesystem",
		"LV rhel/var_log (ext4): trimmed", "LV rhel/root (xfs): trimmed",
	} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("the build output lacks %q:\n%s", want, res.Output)
		}
	}
	if fixture.Sha256(t, disk.Path) != baseSum {
		t.Error("the base image changed")
	}

	img := filepath.Join(a.out(), "t.raw")
	if got := fixture.FileSize(t, img); got != newSize {
		t.Fatalf("artifact size %d, want %d", got, newSize)
	}
	pv := disk.PV
	pv.Size = grownSize(t, img, pv)
	lvs, seqno := lvmLayoutOf(t, img, pv)
	if seqno != "2" || lvs["root"].Size != 146*fixture.LVMExtentSize || lvs["root"].Offset != disk.LV("root").Offset {
		t.Errorf("the output's VG: seqno %s, root %+v", seqno, lvs["root"])
	}
	for _, lv := range disk.LVs {
		p := lvs[lv.Name]
		p.FS = lv.FS
		if lv.Name != "root" && (p.Offset != lv.Offset || p.Size != lv.Size) {
			t.Errorf("LV %s moved: %+v, was %+v", lv.Name, p, lv.Partition)
		}
		// Each file is in its own LV, at the top of its filesystem.
		if got := readOut(t, img, p, "/factory-"+lv.Name); got != lv.Name+"\n" {
			t.Errorf("LV %s: /factory-%s = %q", lv.Name, lv.Name, got)
		}
		fixture.FsckPartition(t, img, p)
	}
	boot, _ := disk.Find("/boot")
	if got := readOut(t, img, boot, "/factory-boot"); got != "boot\n" {
		t.Errorf("/boot's file: %q", got)
	}
	fixture.FsckPartition(t, img, boot)

	root := lvs["root"]
	root.FS = "xfs"
	fixture.WithReadOnlyMount(t, img, root, func(dir string) {
		// The root LV's mount points stayed empty: nothing went past a mount.
		for _, mp := range []string{"var", "home", "tmp", "boot"} {
			if entries, _ := os.ReadDir(filepath.Join(dir, mp)); len(entries) > 0 {
				t.Errorf("the root LV's /%s holds %d entries: a write missed its LV", mp, len(entries))
			}
		}
		data, _ := os.ReadFile(filepath.Join(dir, "root/size-kib"))
		kib, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if kib < (fixture.LVMRootSize+150*fixture.MiB)/1024 {
			t.Errorf("the build saw a root filesystem of %d KiB, want the grown LV's", kib)
		}
		if id, _ := os.ReadFile(filepath.Join(dir, "etc/machine-id")); string(id) != "uninitialized\n" {
			t.Errorf("scrub did not reach the root LV: machine-id %q", id)
		}
	})
	varLog := lvs["var_log"]
	varLog.FS = "ext4"
	if fixture.FileExistsOnDisk(t, img, varLog.Offset, "/messages") {
		t.Error("scrub did not reach the var_log LV: /var/log/messages survived")
	}
	if after := fixture.HostLVMState(t); after != host {
		t.Errorf("the host's LVM state changed:\nbefore:\n%s\nafter:\n%s", host, after)
	}
	assertNoOwnLeaks(t, a)
}

// TestAccLVMFaults: on the LVM layout, a failing provisioner and a plugin
// killed with SIGKILL then a new build leave no loop device or mount.
func TestAccLVMFaults(t *testing.T) {
	t.Run("failing-provisioner", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.LVMDisk(t)
		res := a.Build(t, template(``, `provisioner "shell" { inline = ["echo x > /var/log/x", "exit 7"] }`),
			map[string]string{"base": disk.Path})
		if res.ExitCode == 0 || !strings.Contains(res.Output, "exit status: 7") && !strings.Contains(res.Output, "exit status 7") {
			t.Fatalf("a failing provisioner built, or did not say why:\n%s", res.Output)
		}
		assertNoOwnLeaks(t, a)
	})
	t.Run("sigkill-then-new-build", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.LVMDisk(t)
		killMidBuild(t, a, template(``, `provisioner "shell" { inline = ["echo FACTORY-SLEEPING", "sleep 300"] }`),
			map[string]string{"base": disk.Path, "out": "killed"})
		if leaks := a.before.LeftIn(a.OwnDirs()...); len(leaks) < 6 {
			t.Fatalf("the killed build left %d things (want the LVs' loop devices and mounts among them): %v", len(leaks), leaks)
		}
		res := mustBuild(t, a, template(``, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": disk.Path})
		if !strings.Contains(res.Output, "Released what an earlier, killed build left behind") {
			t.Errorf("the new build did not report reaping the killed one:\n%s", res.Output)
		}
		assertNoOwnLeaks(t, a)
	})
}

// TestAccLVMBoot: the LVM layout holding a bootable Debian 12 tree gets
// lvm2 from a provisioner (its initramfs then activates the VG), and the
// output boots under QEMU, with the kernel and initrd of its /boot
// partition and root=/dev/mapper/rhel-root, to a login prompt: the guest's
// own device mapper finds the LVs where the build left them, and systemd
// mounts /var, /var/log, /home, /tmp from them.
func TestAccLVMBoot(t *testing.T) {
	t.Parallel() // boots under TCG (one core): two such tests run at once, after the sequential ones
	a := newAcc(t)
	disk := fixture.LVMBootDisk(t)
	mustBuild(t, a, template(``, `
  provisioner "shell" {
    inline = [
      "apt-get update -q",
      "apt-get install -y -q --no-install-recommends lvm2",
      "echo booted-from-lv > /var/factory-var",
      "lsinitramfs /boot/initrd.img-* | grep -q 'sbin/lvm$' || { echo 'no lvm in the initrd'; exit 1; }",
    ]
  }
`), map[string]string{"base": disk.Path})
	img := filepath.Join(a.out(), "t.raw")
	boot, _ := disk.Find("/boot")
	dir := t.TempDir()
	var kernel, initrd string
	fixture.WithReadOnlyMount(t, img, boot, func(mnt string) {
		ks, _ := filepath.Glob(filepath.Join(mnt, "vmlinuz-*"))
		is, _ := filepath.Glob(filepath.Join(mnt, "initrd.img-*"))
		if len(ks) != 1 || len(is) != 1 {
			t.Fatalf("/boot holds kernels %v and initrds %v, want one of each", ks, is)
		}
		kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
		for src, dst := range map[string]string{ks[0]: kernel, is[0]: initrd} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	assertNoOwnLeaks(t, a)
	console := fixture.BootToLogin(t, img, fixture.BootOptions{Kernel: kernel, Initrd: initrd, Append: "root=/dev/mapper/rhel-root ro console=ttyS0"})
	// systemd reports each fstab mount it made from the LVs, as
	// "[  OK  ] Mounted <unit> - /var/log." (with colour codes).
	for _, mp := range []string{"/var", "/var/log", "/home", "/tmp", "/boot"} {
		if !mountedIn(console, mp) {
			t.Errorf("the guest did not mount %s; console lines about mounts:\n%s", mp, grepLines(console, "Mount"))
		}
	}
}

// mountedIn tells whether systemd's console says it mounted mp.
func mountedIn(console, mp string) bool {
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, "Mounted ") && strings.Contains(l, " - "+mp+".") {
			return true
		}
	}
	return false
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
