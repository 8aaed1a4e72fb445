package imagefactory_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootstrap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// arm64Include is the package list of the arm64 tree: a kernel, sshd, and
// the GRUB arm64-efi modules the disk's boot loader is made from (an amd64
// host cannot install grub-efi-arm64-bin). internal/bootstrap's
// TestTreeDebootstrapArm64 and bench/arm64.sh use the same list, hence the
// same cached tree.
var arm64Include = []string{"systemd-sysv", "udev", "linux-image-arm64", "openssh-server", "grub-efi-arm64-bin"}

// arm64Source bootstraps that tree (debootstrap --foreign, the second
// stage under qemu-user) and makes a bootable GPT disk of it.
var arm64Source = `
  bootstrap {
    tool    = "debootstrap"
    suite   = "bookworm"
    variant = "minbase"
    arch    = "arm64"
    include = ["` + strings.Join(arm64Include, `", "`) + `"]
  }
`

// requireArm64 skips where the host cannot emulate arm64, and where the
// arm64 tree is not cached unless IMAGEFACTORY_ARM64_COLD=1: making it
// runs debootstrap's second stage under qemu-user, mkinitramfs twice
// among it (32 minutes measured on this 2-core machine under load), more
// than the suite's cold budget; `make arm64-tree` makes it once.
func requireArm64(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if arch.Host() == arch.ARM64 {
		t.Skip("the host is arm64: nothing foreign to show")
	}
	for _, f := range []string{"/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-system-aarch64", qemu.DefaultAAVMFCode} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("needs %s (scripts/install-deps.sh): %v", f, err)
		}
	}
	o := bootstrap.Options{Tool: bootstrap.Debootstrap, Suite: "bookworm", Variant: "minbase", Arch: arch.ARM64, Include: arm64Include}
	if _, err := os.Stat(o.Path()); err != nil && os.Getenv("IMAGEFACTORY_ARM64_COLD") != "1" {
		t.Skipf("the arm64 tree is not cached (%s): run `make arm64-tree` once (debootstrap's second stage under qemu-user, "+
			"20 to 35 minutes), or set IMAGEFACTORY_ARM64_COLD=1", o.Path())
	}
}

// TestAccArm64 is arm64 from nothing on this amd64 host, with ONE boot
// (each aarch64 boot under TCG costs minutes):
//
//  1. bootstrap { arch = "arm64" } (cached by arch; the first run on a
//     machine runs the second stage under qemu-user), a GPT disk with
//     GRUB arm64-efi; in the chroot (qemu-user) a shell provisioner
//     installs nginx-light and enables it; then imagefactory-scrub and
//     imagefactory-sparsify to a zstd qcow2.
//  2. The qemu strategy on that qcow2: qemu-system-aarch64 -M virt, AAVMF,
//     TCG, chosen by the builder from the image's binaries. Its
//     provisioner, over SSH, finds an aarch64 kernel, nginx running and
//     the serial getty up; a shell-local provisioner on the host gets
//     nginx's page through a port forwarded by a qemuargs net0. The serial
//     console shows AAVMF, the image's own GRUB and the login prompt.
//
// So the one boot proves both "the disk boots to a login prompt with nginx
// answering on a forwarded port" and "the qemu strategy provisions the
// arm64 disk over SSH".
func TestAccArm64(t *testing.T) {
	requireArm64(t)
	a := newAcc(t)
	qcow := filepath.Join(a.Dir, "arm64.qcow2")
	res := mustBuild(t, a, treeTemplate(arm64Source, `
  provisioner "shell" {
    inline = [
      "test \"$(uname -m)\" = aarch64",
      "apt-get update -q",
      "apt-get install -y -q --no-install-recommends nginx-light",
      "systemctl enable nginx",
      "printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=yes\\n' > /etc/systemd/network/80-dhcp.network",
      "systemctl enable systemd-networkd.service",
      "echo provisioned-in-chroot > /etc/imagefactory-marker",
    ]
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {
      format      = "qcow2"
      compression = "zstd"
      output      = "`+qcow+`"
    }
  }
`), nil)
	t.Logf("arm64 chroot build %s; %s", res.Duration.Round(time.Second), describeImage(t, qcow))
	for _, l := range strings.Split(res.Output, "\n") {
		if regexp.MustCompile(`Root tree (made|found)|Second stage|Working disk .* made`).MatchString(l) {
			t.Log(strings.TrimSpace(l))
		}
	}
	if !strings.Contains(res.Output, "GRUB arm64-efi from the tree's modules") {
		t.Errorf("the build did not make the disk's GRUB arm64-efi:\n%s", res.Output)
	}
	if info, _ := exec.Command("qemu-img", "info", qcow).CombinedOutput(); !strings.Contains(string(info), "compression type: zstd") {
		t.Errorf("the sparsified image is not a zstd qcow2:\n%s", info)
	}
	checkArm64Disk(t, toRaw(t, qcow))
	a.assertNoLeaksHere(t)

	// The one boot.
	port, err := qemu.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(a.Dir, "nginx-page.html")
	start := time.Now()
	res = mustBuild(t, a, template(fmt.Sprintf(`
  strategy         = "qemu"
  memory           = 1024
  inject_ssh_key   = true
  shutdown_command = "systemctl poweroff"
  qemuargs         = [["-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:%d-:80"]]
`, port), fmt.Sprintf(`
  provisioner "shell" {
    inline = [
      "test \"$(uname -m)\" = aarch64",
      "test \"$(cat /proc/1/comm)\" = systemd",
      "systemctl is-active nginx",
      "for i in $(seq 60); do systemctl is-active serial-getty@ttyAMA0 && break; sleep 2; done",
      "echo made-over-ssh > /etc/factory-made",
    ]
  }
  provisioner "shell-local" {
    inline = ["curl -fsS --max-time 60 -o %s http://127.0.0.1:%d/"]
  }
`, page, port)), map[string]string{"base": qcow, "out": filepath.Join(a.Dir, "qemu")})
	t.Logf("qemu strategy build on the arm64 disk (boot, provisioning, power-off) %s", time.Since(start).Round(time.Second))
	assertQemuBuildSteps(t, res.Output)
	if m := regexp.MustCompile(`Guest clock when SSH answered: [^\n]*`).FindString(res.Output); m != "" {
		t.Log(m) // how long the guest took from its kernel's start to sshd
	}
	for _, want := range []string{"qemu-system-aarch64", "firmware uefi (" + qemu.DefaultAAVMFCode + ")", "CPU model: " + qemu.Arm64CPU, "Accelerator: tcg (guest arch aarch64 is not the host's"} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("the qemu build did not say %q:\n%s", want, res.Output)
		}
	}
	if b, err := os.ReadFile(page); err != nil || !strings.Contains(string(b), "Welcome to nginx") {
		t.Errorf("nginx's page through the forwarded port: %q, %v", b, err)
	}
	console, _ := os.ReadFile(filepath.Join(a.Dir, "qemu", "console.log"))
	text := qemu.Tail(filepath.Join(a.Dir, "qemu", "console.log"), 1<<20)
	// AAVMF's boot manager, the image's GRUB (only GRUB puts BOOT_IMAGE= on
	// the command line), an arm64 kernel, the getty's prompt.
	for _, want := range []string{"BdsDxe", "command line: BOOT_IMAGE=/boot/vmlinuz-", "Booting Linux on physical CPU", " login: "} {
		if !strings.Contains(text, want) {
			t.Errorf("the serial console lacks %q:\n%.4000s", want, console)
		}
	}
	out := toRaw(t, filepath.Join(a.Dir, "qemu", "t.raw"))
	fixture.WithReadOnlyMount(t, out, lastPartition(t, out, "ext4"), func(dir string) {
		if b, _ := os.ReadFile(filepath.Join(dir, "etc/factory-made")); string(b) != "made-over-ssh\n" {
			t.Errorf("the SSH provisioner's file is not in the output")
		}
		assertNoFactoryBoot(t, dir, false)
	})
	assertNoQemuLeaks(t, a)
}

// checkArm64Disk checks the arm64 chroot build's disk from outside: GPT
// with the EFI system partition and the root only, \EFI\BOOT\BOOTAA64.EFI
// (mtools), grub.cfg without x86 serial commands and with ttyAMA0, nginx
// installed and enabled, the marker, no interpreter left in the image, and
// a clean root filesystem.
func checkArm64Disk(t *testing.T, raw string) {
	t.Helper()
	verifyGPT(t, raw)
	tab, err := fixture.ReadTable(t, raw)
	if err != nil {
		t.Fatal(err)
	}
	ps, ss := tab.PartitionTable.Partitions, tab.PartitionTable.SectorSize
	if len(ps) != 2 || !strings.EqualFold(ps[0].Type, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") {
		t.Fatalf("want 2 partitions, the first an EFI system partition: %+v", ps)
	}
	esp := fmt.Sprintf("%s@@%d", raw, ps[0].Start*ss)
	if b, err := exec.Command("mdir", "-i", esp, "-b", "::/EFI/BOOT").CombinedOutput(); err != nil || !strings.Contains(string(b), "BOOTAA64.EFI") || strings.Contains(string(b), "BOOTX64") {
		t.Errorf("the ESP's /EFI/BOOT: %v\n%s", err, b)
	}
	root := lastPartition(t, raw, "ext4")
	if got := readOut(t, raw, root, "/etc/imagefactory-marker"); got != "provisioned-in-chroot\n" {
		t.Errorf("/etc/imagefactory-marker = %q", got)
	}
	cfg := readOut(t, raw, root, "/boot/grub/grub.cfg")
	if !strings.Contains(cfg, "console=ttyAMA0,115200") || strings.Contains(cfg, "serial --unit") {
		t.Errorf("grub.cfg:\n%s", cfg)
	}
	if !fixture.FileExistsOnDisk(t, raw, root.Offset, "/etc/systemd/system/multi-user.target.wants/nginx.service") ||
		!fixture.FileExistsOnDisk(t, raw, root.Offset, "/usr/sbin/nginx") {
		t.Errorf("nginx is not installed and enabled in the image")
	}
	for _, p := range []string{"/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-aarch64"} {
		if fixture.FileExistsOnDisk(t, raw, root.Offset, p) {
			t.Errorf("an interpreter was left in the image: %s", p)
		}
	}
	fixture.E2fsck(t, raw, root.Offset)
}
