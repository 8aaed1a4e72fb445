package imagefactory_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// A filesystem image in, a bootable disk out: source_rootfs given a bare
// ext4 filesystem (an AMI's root image, without a kernel), with the
// kernel, initrd and modules from the host.

// TestAccRootfsFilesystemImage builds a 3 GiB GPT disk from a Debian 12
// ext4 filesystem image that has no kernel (fstab by UUID,
// metadata_csum_seed), with a kernel, initrd and modules given by path, a
// shell provisioner writing into the root, and disk_size; then
// imagefactory-scrub and imagefactory-sparsify (to qcow2) run on it in the
// same build. The output is inspected with other tools (qemu-img, sfdisk,
// blkid, debugfs, e2fsck), the image file is unchanged, and the disk boots
// to a login prompt.
func TestAccRootfsFilesystemImage(t *testing.T) {
	t.Parallel() // minutes of chroot and mkfs work: beside the boot tests, after the sequential ones
	a := newAcc(t)
	img := fixture.DebianFSImage(t)
	kernel, initrd, modules, release := fixture.KernelFiles(t)
	sum := fixture.Sha256(t, img.Path)
	res := mustBuild(t, a, treeTemplate(fmt.Sprintf(`
  source_rootfs  = %q
  kernel         = %q
  initrd         = %q
  kernel_modules = %q
  disk_size      = "3G"
`, img.Path, kernel, initrd, modules), marker+`
  provisioner "shell" {
    inline = ["test -f /lib/modules/$(ls /lib/modules)/modules.dep", "ls /lib/modules > /etc/modules-seen"]
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {
      format = "qcow2"
      output = "out/final.qcow2"
    }
  }
`), nil)
	final := filepath.Join(a.out(), "final.qcow2")
	t.Logf("build %s; %s", res.Duration, describeImage(t, final))
	if qemuImgFormat(t, final) != "qcow2" {
		t.Fatalf("%s is not a qcow2", final)
	}
	out := toRaw(t, final)
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.Contains(l, "Working disk") && strings.Contains(l, " made in ") {
			t.Logf("%s", l[strings.Index(l, "Working disk"):])
		}
	}

	if fixture.Sha256(t, img.Path) != sum {
		t.Errorf("the filesystem image %s changed", img.Path)
	}
	for _, want := range []string{"is an ext4 filesystem image", "mounted read-only", "keeps the image's UUID " + img.UUID,
		"Kept the image's /etc/fstab", "Copied the modules of kernel " + release} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("the build did not say %q:\n%s", want, res.Output)
		}
	}
	if size := fixture.FileSize(t, out); size != 3<<30 {
		t.Errorf("output is %d bytes, want disk_size 3G", size)
	}
	if got := readOut(t, out, lastPartition(t, out, "ext4"), "/etc/machine-id"); got != "uninitialized\n" {
		t.Errorf("/etc/machine-id = %q: not scrubbed", got)
	}
	root := lastPartition(t, out, "ext4")
	blk, _ := exec.Command("blkid", "-p", "-O", fmt.Sprint(root.Offset), "-o", "export", out).CombinedOutput()
	for _, want := range []string{"TYPE=ext4", "UUID=" + img.UUID, "LABEL=" + img.Label} {
		if !strings.Contains(string(blk), want+"\n") {
			t.Errorf("the new root does not keep %s:\n%s", want, blk)
		}
	}
	if got := readOut(t, out, root, "/etc/imagefactory-marker"); got != "provisioned-in-chroot\n" {
		t.Errorf("/etc/imagefactory-marker = %q", got)
	}
	if got := readOut(t, out, root, "/etc/modules-seen"); got != release+"\n" {
		t.Errorf("/lib/modules in the chroot held %q, want %s", got, release)
	}
	if got := readOut(t, out, root, "/etc/fstab"); got != img.Fstab {
		t.Errorf("/etc/fstab =\n%s\nwant the image's, unchanged:\n%s", got, img.Fstab)
	}
	for _, f := range []string{"/boot/vmlinuz-" + release, "/boot/initrd.img-" + release, "/usr/lib/modules/" + release + "/modules.dep"} {
		if !fixture.FileExistsOnDisk(t, out, root.Offset, f) {
			t.Errorf("%s missing from the new root", f)
		}
	}
	if cfg := readOut(t, out, root, "/boot/grub/grub.cfg"); !strings.Contains(cfg, "/boot/vmlinuz-"+release+" root=UUID="+img.UUID) {
		t.Errorf("grub.cfg does not boot the kernel on the image's UUID:\n%s", cfg)
	}
	fixture.E2fsck(t, out, root.Offset)
	if h := fixture.Ext4Header(t, out, root.Offset); h["Block count"]*h["Block size"] < root.Size-(1<<20) {
		t.Errorf("the root filesystem has %d bytes in a %d-byte partition: not grown to disk_size", h["Block count"]*h["Block size"], root.Size)
	}
	if left, _ := filepath.Glob(filepath.Join(a.out(), ".*")); len(left) > 0 {
		t.Errorf("left in the output directory: %v", left)
	}
	a.assertNoLeaksHere(t)
	a.before.AssertNoLeaksIn(t, filepath.Dir(img.Path)) // the image's read-only loop device and mount
	fixture.BootToLogin(t, final, fixture.BootOptions{})
}

// TestAccRootfsFilesystemImageBadInput: each bad file fails the build with
// one error naming it, before anything is written; the file is unchanged
// and nothing is left.
func TestAccRootfsFilesystemImageBadInput(t *testing.T) {
	requireRoot(t)
	junk := filepath.Join(t.TempDir(), "root.img")
	os.WriteFile(junk, []byte(strings.Repeat("neither a filesystem nor a tarball\n", 4096)), 0o644)
	fakeKernel := filepath.Join(t.TempDir(), "vmlinuz-9.9.9-test")
	os.WriteFile(fakeKernel, []byte("a kernel"), 0o644)
	unknown := fixture.BareFSImage(t, "ext4", "")
	fixture.SetExtIncompat(t, unknown.Path, 0, 1<<30)
	for _, tc := range []struct {
		name, path, options, want string
	}{
		{"neither", junk, "", "is neither a directory, a tarball tar can read (.tar, .tar.gz, .tar.xz, .tar.zst) nor an ext2/3/4 or xfs filesystem image; tar: "},
		{"whole disk", fixture.NewDisk(t, fixture.DiskOptions{}).Path, "",
			"nor an ext2/3/4 or xfs filesystem image: it holds a whole disk with an MBR partition table (a whole disk image is a base_image); tar: "},
		{"qcow2 of a whole disk", fixture.QCOW2(t, fixture.NewDisk(t, fixture.DiskOptions{}).Path), "",
			"is a qcow2 image whose content is not an ext2/3/4 or xfs filesystem: it holds a whole disk with an MBR partition table (a whole disk image is a base_image)"},
		{"unknown ext feature", unknown.Path, "",
			": unsupported filesystem features: ext incompatible features unknown 0x40000000, which Linux cannot mount"},
		{"no kernel", fixture.BareFSImage(t, "xfs", "").Path, "", "(an xfs filesystem image) has no kernel (/boot/vmlinuz-*): give kernel and initrd"},
		{"xfs label", fixture.BareFSImage(t, "ext4", "").Path, fmt.Sprintf("kernel = %q\n  root_fs = \"xfs\"", fakeKernel),
			`: root_fs xfs cannot keep its ext4 filesystem's label "cloudimg-rootfs" (xfs labels hold 12 bytes), which its fstab may name: use root_fs = "ext4"`},
		{"kernel_modules missing", fixture.BareFSImage(t, "ext4", "").Path, fmt.Sprintf("kernel = %q\n  kernel_modules = \"/nonexistent/modules\"", fakeKernel), "kernel_modules /nonexistent/modules is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAcc(t)
			sum := fixture.Sha256(t, tc.path)
			res := a.Build(t, treeTemplate(fmt.Sprintf("  source_rootfs = %q\n  %s", tc.path, tc.options), marker), nil)
			if res.ExitCode == 0 {
				t.Fatalf("build succeeded:\n%s", res.Output)
			}
			for _, l := range strings.Split(res.Output, "\n") {
				if strings.Contains(l, "--> imagefactory.t:") {
					t.Logf("the error: %s", l[strings.Index(l, "--> "):])
				}
			}
			if !strings.Contains(res.Output, tc.want) || !strings.Contains(res.Output, tc.path) {
				t.Errorf("output lacks %q naming %s:\n%s", tc.want, tc.path, res.Output)
			}
			if fixture.Sha256(t, tc.path) != sum {
				t.Errorf("the input %s changed", tc.path)
			}
			if _, err := os.Stat(filepath.Join(a.out(), "t.raw")); err == nil {
				t.Errorf("an artifact was left")
			}
			if left, _ := filepath.Glob(filepath.Join(a.out(), ".*")); len(left) > 0 {
				t.Errorf("working files left: %v", left)
			}
			a.assertNoLeaksHere(t)
			a.before.AssertNoLeaksIn(t, filepath.Dir(tc.path))
		})
	}
}
