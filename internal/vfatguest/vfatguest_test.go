package vfatguest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// guestTests are the tests that branch on whether the kernel mounts vfat
// (fixture.KernelMountsVFAT, mounts.KernelMayMount, a FAT in an image's
// fstab) or that must hold on any kernel with a type no kernel mounts
// (fixture.NoFSType): those of internal/mounts and internal/session, and
// the acceptance tests of builder/imagefactory with a FAT in fstab
// (TestAccOptions' /boot/efi, TestAccFirmwarePartition's /boot/firmware). The
// rest of those packages does not depend on the kernel's filesystems and
// costs minutes under TCG (mkfs and mounts: about 80 times slower than
// here).
var guestTests = []fixture.GuestTest{
	{Name: "mounts", Pkg: "internal/mounts", Run: "^(TestKernelMayMountVFAT|TestNoFSTypeIsENODEV|TestStackRootFstabChroot|TestSkippedMountPlaceholder|TestMountFstabRequired|TestUnmountableServed)$"},
	{Name: "session-fat", Pkg: "internal/session", Run: "^(TestFATStaged|TestFATStagedMovedAway)$"},
	{Name: "session-esp", Pkg: "internal/session", Run: "^TestMountFstab$/ESP"},
	// The acceptance test of a vfat /boot/efi from the image's fstab,
	// built by the real Packer and plugin.
	{Name: "acc-options", Pkg: "builder/imagefactory", Run: "^TestAccOptions$", Packer: true},
	{Name: "acc-firmware", Pkg: "builder/imagefactory", Run: "^TestAccFirmwarePartition$", Packer: true},
}

// want is what must have happened in the guest, beyond "nothing failed":
// the vfat branches ran (and staging's tests skipped, saying why), and
// the made-up type is ENODEV on the stock kernel too.
var want = []struct {
	run, test, action, output string
}{
	{"mounts", "TestKernelMayMountVFAT", "pass", "KernelMayMount(vfat) = true (in /proc/filesystems before: false)"},
	{"mounts", "TestNoFSTypeIsENODEV", "pass", ""},
	{"mounts", "TestSkippedMountPlaceholder", "pass", ""},
	{"mounts", "TestMountFstabRequired", "pass", ""},
	{"mounts", "TestUnmountableServed", "pass", ""},
	{"mounts", "TestStackRootFstabChroot", "pass", ""},
	{"session-fat", "TestFATStaged/staged", "pass", "the kernel mounted the FAT: /boot/firmware (partition 1"},
	{"session-fat", "TestFATStaged/placeholder", "skip", "this kernel mounts vfat"},
	{"session-fat", "TestFATStagedMovedAway", "skip", "this kernel mounts vfat"},
	{"session-esp", "TestMountFstab/ESP_of_a_type_the_kernel_cannot_mount", "pass", ""},
	{"session-esp", "TestMountFstab/required_ESP_of_a_type_the_kernel_cannot_mount", "pass", ""},
	{"acc-options", "TestAccOptions", "pass", "the vfat /boot/efi was mounted by the kernel (KernelMountsVFAT = true)"},
	{"acc-options", "TestAccOptions/required-unmountable-fails", "pass", ""},
	{"acc-firmware", "TestAccFirmwarePartition/edit", "pass", "the FAT /boot/firmware was mounted by the kernel (KernelMountsVFAT = true)"},
	{"acc-firmware", "TestAccFirmwarePartition/grow", "pass", ""},
}

// TestVFATKernel boots the vfat guest once (the cached bootable Debian
// tree's kernel and initramfs, its root with dosfstools, mtools,
// busybox, qemu-utils and gdisk added; the real Packer and the plugin on
// the payload for the acceptance tests), runs guestTests in it as root,
// and fails on any test
// that fails there. It also asserts that the guest is the stock kernel it
// was built from, that vfat was not in its /proc/filesystems before the
// tests and is after (the kernel loaded it on demand for them), and each
// outcome of want; a skip not in want fails it too.
func TestVFATKernel(t *testing.T) {
	img := fixture.VFATGuest(t)
	before := fixture.LeakSnapshot()
	r := fixture.RunInGuest(t, img, guestTests, 5*time.Minute)
	before.AssertNoLeaksIn(t, r.Dir, filepath.Dir(img.Root))
	if t.Failed() {
		return
	}
	for _, l := range strings.Split(r.Console, "\n") {
		if strings.HasPrefix(l, "imagefactory-guest:") {
			t.Log(l)
		}
	}
	if r.Release != img.Release {
		t.Errorf("the guest ran kernel %q, want %q", r.Release, img.Release)
	}
	if r.FilesystemsBefore["vfat"] || !r.FilesystemsAfter["vfat"] {
		t.Errorf("vfat in the guest's /proc/filesystems: before the tests %v, after %v; want false, true (loaded on demand)",
			r.FilesystemsBefore["vfat"], r.FilesystemsAfter["vfat"])
	}
	for _, f := range r.Failed() {
		t.Errorf("in the guest: %s", f)
	}
	wantSkip := map[string]bool{}
	for _, w := range want {
		action, out := r.Outcome(w.run, w.test)
		if action != w.action || !strings.Contains(out, w.output) {
			t.Errorf("in the guest, %s %s: %q, want %q with %q in its output:\n%s", w.run, w.test, action, w.action, w.output, out)
		}
		wantSkip[w.run+" "+w.test] = w.action == "skip"
	}
	// Any other skip (a tool missing in the guest, say) would hide a
	// branch this test is for.
	for _, gt := range guestTests {
		for _, e := range r.Events[gt.Name] {
			if e.Action == "skip" && !wantSkip[gt.Name+" "+e.Test] {
				_, out := r.Outcome(gt.Name, e.Test)
				t.Errorf("in the guest, %s %s was skipped:\n%s", gt.Name, e.Test, out)
			}
		}
	}
	if t.Failed() {
		t.Logf("the guest's console:\n%s", r.Console)
	}
}
