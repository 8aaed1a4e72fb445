package imagefactory_test

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

// Disks made from a root tree (source_rootfs, bootstrap) and chained
// builds (use_backing_file). The boot tests start the result under QEMU
// (TCG) with SeaBIOS and OVMF and wait for the login prompt on the serial
// console.

// treeTemplate is a build of one imagefactory source without base_image.
func treeTemplate(source, build string) string {
	return `
variable "out" {
  type    = string
  default = "out"
}
source "imagefactory" "t" {
  output_directory = var.out
  mount_path       = "${path.cwd}/mnt"
` + source + `
}
build {
  sources = ["source.imagefactory.t"]
` + build + `
}
`
}

// marker is a shell provisioner that leaves a file, to show the chroot
// provisioning ran on the disk made from the tree.
const marker = `
  provisioner "shell" {
    inline = ["echo provisioned-in-chroot > /etc/imagefactory-marker"]
  }
`

// assertNoLeaksHere is acc.assertNoLeaks scoped to this test's own
// directory: loop devices, mounts and processes tied to it (its builds
// mount under it, mount_path, or on loop devices of its files), and
// journals. Builds of other checkouts on the machine, under the shared
// /run/imagefactory/mnt, are not counted.
func (a *acc) assertNoLeaksHere(t *testing.T) {
	t.Helper()
	a.before.AssertNoLeaksIn(t, a.Base)
	journals, _ := filepath.Glob(filepath.Join(a.state, "*.journal"))
	if len(journals) > 0 {
		t.Errorf("journals left in %s: %v", a.state, journals)
	}
}

// lastPartition reads the last partition of a raw image with sfdisk (not
// our code): the root of a disk made from a tree.
func lastPartition(t *testing.T, raw, fs string) fixture.Partition {
	t.Helper()
	tab, err := fixture.ReadTable(t, raw)
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", raw, err)
	}
	ps, ss := tab.PartitionTable.Partitions, tab.PartitionTable.SectorSize
	if len(ps) == 0 {
		t.Fatalf("no partitions in %s", raw)
	}
	p := ps[len(ps)-1]
	return fixture.Partition{Number: len(ps), Offset: p.Start * ss, Size: p.Size * ss, FS: fs}
}

// checkTreeDisk checks a disk made from a tree from outside: the table,
// the root's label, the builder's fstab and grub.cfg, the provisioner's
// marker, a clean filesystem.
func checkTreeDisk(t *testing.T, img, table, fs, label string) {
	t.Helper()
	raw := img
	if qemuImgFormat(t, img) != "raw" {
		raw = toRaw(t, img)
	}
	if tab, err := fixture.ReadTable(t, raw); err != nil || tab.PartitionTable.Label != map[string]string{"gpt": "gpt", "mbr": "dos"}[table] {
		t.Errorf("partition table is not %s: %+v, %v", table, tab.PartitionTable, err)
	}
	if table == "gpt" {
		verifyGPT(t, raw)
	}
	root := lastPartition(t, raw, fs)
	blk, _ := exec.Command("blkid", "-p", "-O", fmt.Sprint(root.Offset), "-o", "export", raw).CombinedOutput()
	if !strings.Contains(string(blk), "TYPE="+fs) || !strings.Contains(string(blk), "LABEL="+label) {
		t.Errorf("root filesystem: want %s labelled %s:\n%s", fs, label, blk)
	}
	if got := readOut(t, raw, root, "/etc/imagefactory-marker"); got != "provisioned-in-chroot\n" {
		t.Errorf("/etc/imagefactory-marker = %q", got)
	}
	if fstab := readOut(t, raw, root, "/etc/fstab"); !strings.Contains(fstab, "\t/\t"+fs+"\t") {
		t.Errorf("/etc/fstab:\n%s", fstab)
	}
	if cfg := readOut(t, raw, root, "/boot/grub/grub.cfg"); !strings.Contains(cfg, "console=ttyS0,115200") {
		t.Errorf("grub.cfg:\n%s", cfg)
	}
	if fs == "ext4" {
		fixture.E2fsck(t, raw, root.Offset)
	}
}

// bootstrapInclude is the package list of the bootstrap tests, the same as
// example/build.pkr.hcl's, so the example and the tests share one cached
// debootstrap tree.
const bootstrapInclude = `["systemd-sysv", "udev", "linux-image-amd64", "openssh-server"]`

// bootstrapSource makes a bootable GPT qcow2 disk from that tree.
const bootstrapSource = `
  bootstrap {
    tool    = "debootstrap"
    suite   = "bookworm"
    variant = "minbase"
    include = ` + bootstrapInclude + `
  }
  format = "qcow2"
`

// networkd is a chroot provisioner that gives the image DHCP on its NIC
// (systemd-networkd, part of systemd), as example/build.pkr.hcl does: a
// bare debootstrap tree brings no network up. (The qemu strategy brings
// its own up for its boot: TestAccQemuNetwork.)
const networkd = `
  provisioner "shell" {
    inline = [
      "printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=yes\\n' > /etc/systemd/network/80-dhcp.network",
      "systemctl enable systemd-networkd.service",
    ]
  }
`

// TestAccBootstrapBoots runs the real debootstrap path (its tree cached in
// $IMAGEFACTORY_CACHE, else /var/cache/imagefactory, keyed by its inputs),
// makes a GPT disk, provisions it in the chroot and boots it with SeaBIOS
// and OVMF. Then the qemu strategy boots that artifact by its own GRUB (no
// boot_kernel) through a qcow2 overlay on it (use_backing_file: QEMU runs
// on the overlay's FUSE view), reaches it with an injected key (the image
// has no cloud-init), provisions it over SSH, and the output, mounted,
// holds nothing of the factory boot.
func TestAccBootstrapBoots(t *testing.T) {
	requireQemu(t)
	t.Parallel() // boots under TCG (one core): two such tests run at once, after the sequential ones
	a := newAcc(t)
	res := mustBuild(t, a, treeTemplate(bootstrapSource, marker+networkd), nil)
	img := filepath.Join(a.out(), "t.qcow2")
	t.Logf("build %s; %s", res.Duration, describeImage(t, img))
	checkTreeDisk(t, img, "gpt", "ext4", "cloudimg-rootfs")
	a.assertNoLeaksHere(t)
	a.assertNoBootstrapLeaks(t, res.Output)
	fixture.BootToLogin(t, img, fixture.BootOptions{})
	fixture.BootToLogin(t, img, fixture.BootOptions{UEFI: true})

	baseSum := fixture.Sha256(t, img)
	res = mustBuild(t, a, template(`
  strategy         = "qemu"
  memory           = 1024
  inject_ssh_key   = true
  shutdown_command = "systemctl poweroff"
  use_backing_file = true
`, qemuProvisioners+`
  provisioner "shell" {
    # The tree's resolv.conf is empty: the build gives the boot QEMU's DNS.
    inline = ["getent hosts deb.debian.org"]
  }
`), map[string]string{"base": img, "out": filepath.Join(a.Dir, "qemu")})
	overlay := filepath.Join(a.Dir, "qemu", "t.qcow2")
	t.Logf("qemu strategy build %s; %s", res.Duration, describeImage(t, overlay))
	if !strings.Contains(res.Output, "nothing of the base is copied") {
		t.Errorf("the qemu build's working disk was not an overlay on its base:\n%s", res.Output)
	}
	if b := backingFile(t, overlay); b != img {
		t.Errorf("the qemu build's artifact is backed by %q, want %s", b, img)
	}
	out := toRaw(t, overlay) // follows the backing file
	assertQemuBuildSteps(t, res.Output)
	// GRUB, and only GRUB, puts BOOT_IMAGE= on the kernel's command line:
	// the disk booted by its own boot loader, not by a -kernel of ours.
	if console, _ := os.ReadFile(filepath.Join(a.Dir, "qemu", "console.log")); !strings.Contains(string(console), "Command line: BOOT_IMAGE=") {
		t.Errorf("console.log does not show a boot through the image's GRUB:\n%.3000s", console)
	}
	if fixture.Sha256(t, img) != baseSum {
		t.Errorf("the qemu build changed its base image")
	}
	fixture.WithReadOnlyMount(t, out, lastPartition(t, out, "ext4"), func(dir string) {
		assertQemuProvisioned(t, dir)
		assertNoFactoryBoot(t, dir, false)
		if b, _ := os.ReadFile(filepath.Join(dir, "etc/imagefactory-marker")); string(b) != "provisioned-in-chroot\n" {
			t.Errorf("the chroot build's marker is not in the qemu build's output")
		}
		if b, err := os.ReadFile(filepath.Join(dir, "etc/resolv.conf")); err != nil || len(b) != 0 {
			t.Errorf("/etc/resolv.conf in the output = %q (%v), want the tree's empty file back", b, err)
		}
	})
	assertNoQemuLeaks(t, a)
}

// TestAccRootfsTarballChained makes an MBR base image from the bootable
// Debian tarball (scripts/debian-rootfs.sh), then builds an application
// image on that artifact with use_backing_file: a qcow2 overlay that names
// the base, holds only the changes, and boots with SeaBIOS (GRUB's core in
// the MBR gap) and OVMF (the EFI system partition beside the root).
func TestAccRootfsTarballChained(t *testing.T) {
	t.Parallel() // boots under TCG (one core): two such tests run at once, after the sequential ones
	a := newAcc(t)
	tarball := fixture.DebianRootfs(t, true)
	res := mustBuild(t, a, treeTemplate(fmt.Sprintf(`
  source_rootfs   = %q
  partition_table = "mbr"
  format          = "qcow2"
`, tarball), marker), nil)
	base := filepath.Join(a.out(), "t.qcow2")
	t.Logf("base build %s; %s", res.Duration, describeImage(t, base))
	checkTreeDisk(t, base, "mbr", "ext4", "cloudimg-rootfs")
	if left, _ := filepath.Glob(filepath.Join(a.out(), ".*")); len(left) > 0 {
		t.Errorf("left in the output directory: %v", left)
	}
	a.assertNoLeaksHere(t)

	// The application image, on the base image's artifact.
	baseSum := fixture.Sha256(t, base)
	res = mustBuild(t, a, template(`
  use_backing_file = true
  mount_path       = "${path.cwd}/mnt"
`, `
  provisioner "shell" {
    inline = ["echo application > /etc/app", "rm /etc/imagefactory-marker"]
  }
`), map[string]string{"base": base, "out": filepath.Join(a.Dir, "app")})
	app := filepath.Join(a.Dir, "app", "t.qcow2")
	t.Logf("app build %s; %s", res.Duration, describeImage(t, app))
	if fixture.Sha256(t, base) != baseSum {
		t.Errorf("the base image changed")
	}
	if !strings.Contains(res.Output, "nothing of the base is copied") {
		t.Errorf("the app build's working disk was not an overlay on the base:\n%s", res.Output)
	}
	if b := backingFile(t, app); b != base {
		t.Errorf("app image: backing %q; want a qcow2 on %s (qcow2)", b, base)
	}
	if as, bs := allocated(t, app), allocated(t, base); as*4 > bs {
		t.Errorf("the overlay allocates %d bytes, the base %d: not an overlay of the changes", as, bs)
	}
	raw := toRaw(t, app) // follows the backing file
	root := lastPartition(t, raw, "ext4")
	if got := readOut(t, raw, root, "/etc/app"); got != "application\n" {
		t.Errorf("/etc/app = %q", got)
	}
	if fixture.FileExistsOnDisk(t, raw, root.Offset, "/etc/imagefactory-marker") {
		t.Errorf("the file the app build removed is still there")
	}
	fixture.E2fsck(t, raw, root.Offset)
	a.assertNoLeaksHere(t)
	// An MBR disk carries an EFI system partition too: both firmwares boot it.
	fixture.BootToLogin(t, app, fixture.BootOptions{})
	fixture.BootToLogin(t, app, fixture.BootOptions{UEFI: true})
}

// TestAccRootfsDirectoryXFS makes a GPT disk with an xfs root from a
// directory (left untouched), fstab by UUID, and boots it with OVMF.
func TestAccRootfsDirectoryXFS(t *testing.T) {
	t.Parallel() // minutes of chroot and mkfs work: beside the boot tests, after the sequential ones
	a := newAcc(t)
	tree := fixture.ExtractTree(t, fixture.DebianRootfs(t, true))
	fstabBefore, err := os.ReadFile(filepath.Join(tree, "etc/fstab"))
	if err != nil {
		t.Fatal(err)
	}
	res := mustBuild(t, a, treeTemplate(fmt.Sprintf(`
  source_rootfs = %q
  root_fs       = "xfs"
  fstab_by      = "uuid"
  free_space    = "128M"
`, tree), marker), nil)
	img := filepath.Join(a.out(), "t.raw")
	t.Logf("build %s; %s", res.Duration, describeImage(t, img))
	checkTreeDisk(t, img, "gpt", "xfs", "img-rootfs")
	if after, err := os.ReadFile(filepath.Join(tree, "etc/fstab")); err != nil || string(after) != string(fstabBefore) {
		t.Errorf("the source tree's /etc/fstab changed (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(tree, "etc/imagefactory-marker")); err == nil {
		t.Errorf("the provisioner wrote into the source tree")
	}
	root := lastPartition(t, img, "xfs")
	if fstab := readOut(t, img, root, "/etc/fstab"); !strings.HasPrefix(strings.SplitN(fstab, "\n", 2)[1], "UUID=") {
		t.Errorf("fstab not by UUID:\n%s", fstab)
	}
	a.assertNoLeaksHere(t)
	fixture.BootToLogin(t, img, fixture.BootOptions{UEFI: true})
}

// TestAccRootfsBadInput: each bad input fails with one clear error, leaves
// nothing under the artifact's name and nothing on the host.
func TestAccRootfsBadInput(t *testing.T) {
	noKernel := t.TempDir()
	fixture.BusyboxTree(t, noKernel)
	notTar := filepath.Join(t.TempDir(), "rootfs.tar.zst")
	os.WriteFile(notTar, []byte("not a tarball at all\n"), 0o644)
	bigTree := t.TempDir()
	fixture.BusyboxTree(t, bigTree)
	os.WriteFile(filepath.Join(bigTree, "boot-blob"), make([]byte, 0), 0o644)
	os.MkdirAll(filepath.Join(bigTree, "boot"), 0o755)
	os.WriteFile(filepath.Join(bigTree, "boot/vmlinuz-1.0"), []byte("not a kernel"), 0o644)
	blob := make([]byte, 200<<20)
	for i := range blob {
		blob[i] = byte(i ^ i>>11)
	}
	os.WriteFile(filepath.Join(bigTree, "blob"), blob, 0o644)

	for _, tc := range []struct {
		name, source, want string
	}{
		{"no kernel", fmt.Sprintf("source_rootfs = %q", noKernel), "has no kernel (/boot/vmlinuz-*)"},
		{"not a tarball", fmt.Sprintf("source_rootfs = %q", notTar), "is neither a directory, a tarball tar can read"},
		{"disk_size too small", fmt.Sprintf("source_rootfs = %q\n  disk_size = \"150M\"", bigTree), "disk_size 150M is too small for the root tree"},
		{"missing", `source_rootfs = "/nonexistent/tree"`, "source_rootfs /nonexistent/tree does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAcc(t)
			res := a.Build(t, treeTemplate("  "+tc.source, marker), nil)
			if res.ExitCode == 0 {
				t.Fatalf("build succeeded:\n%s", res.Output)
			}
			if !strings.Contains(res.Output, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, res.Output)
			}
			if _, err := os.Stat(filepath.Join(a.out(), "t.raw")); err == nil {
				t.Errorf("an artifact was left at %s", filepath.Join(a.out(), "t.raw"))
			}
			if left, _ := filepath.Glob(filepath.Join(a.out(), ".*")); len(left) > 0 {
				t.Errorf("working files left: %v", left)
			}
			a.assertNoLeaksHere(t)
		})
	}
	if _, err := os.Stat(filepath.Join(noKernel, "etc/fstab")); err != nil {
		t.Errorf("the source tree lost its fstab: %v", err)
	}
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st struct{ Blocks int64 }
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st.Blocks = statBlocks(fi)
	return st.Blocks * 512
}

func describeImage(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("qemu-img", "info", "--output=json", path).Output()
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	json.Unmarshal(out, &info)
	return fmt.Sprintf("%s: %d MiB file, %d MiB allocated, virtual %d MiB", filepath.Base(path), fi.Size()>>20, allocated(t, path)>>20, info.VirtualSize>>20)
}

// backingFile is the absolute backing file of a qcow2 image whose backing
// format is recorded as qcow2, or "" (with an error) for anything else.
func backingFile(t *testing.T, img string) string {
	t.Helper()
	var info struct {
		Format  string `json:"format"`
		Backing string `json:"full-backing-filename"`
		BFormat string `json:"backing-filename-format"`
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(out, &info)
	if info.Format != "qcow2" || info.BFormat != "qcow2" {
		t.Errorf("%s: format %s, backing format %s; want a qcow2 backed by a qcow2", img, info.Format, info.BFormat)
		return ""
	}
	return info.Backing
}
