package imagefactory_test

import (
	"context"
	"errors"
	"flag"
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
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
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

// requireArm64 skips where the host cannot emulate arm64.
func requireArm64(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if reason := arm64Unsupported(); reason != "" {
		t.Skip(reason)
	}
}

func arm64Unsupported() string {
	if arch.Host() == arch.ARM64 {
		return "the host is arm64: nothing foreign to show"
	}
	for _, f := range []string{"/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-system-aarch64", qemu.DefaultAAVMFCode} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Sprintf("needs %s (scripts/install-deps.sh): %v", f, err)
		}
	}
	return ""
}

func arm64Options() bootstrap.Options {
	return bootstrap.Options{Tool: bootstrap.Debootstrap, Suite: "bookworm", Variant: "minbase", Arch: arch.ARM64, Include: arm64Include}
}

// arm64Tree is the arm64 tree, made in the background from the start of
// this package's tests when it is not cached: its second stage under
// qemu-user (about 20 minutes cold on this 2-core machine) then overlaps
// the sequential tests instead of adding to the suite. TestAccArm64, a
// parallel test (so run after them), waits for it; its build then finds
// the tree cached. Tests that compare the host's binfmt_misc tolerate the
// registration it holds (fixture.CheckBinfmt: ours, with a live share).
var arm64Tree struct {
	done chan struct{}
	err  error
	log  []string // debootstrap's "I: Second stage"/"I: initramfs" lines
	took time.Duration
}

// prewarmArm64 starts making the arm64 tree when TestAccArm64 is to run
// (as root, not -short, selected by -run) and the tree is not cached.
// stop cancels it if it is still running and waits for it.
func prewarmArm64() (stop func()) {
	arm64Tree.done = make(chan struct{})
	run := flag.Lookup("test.run").Value.String()
	selected, _ := regexp.MatchString(strings.Split(run, "/")[0], "TestAccArm64")
	o := arm64Options()
	if _, err := os.Stat(o.Path()); err == nil || testing.Short() || os.Geteuid() != 0 || !selected || arm64Unsupported() != "" {
		close(arm64Tree.done)
		return func() {}
	}
	// One state directory for every run, so that what a killed run of the
	// tests left (its debootstrap's mounts and processes, the binfmt_misc
	// registration) is released by the next.
	state := filepath.Join(os.TempDir(), "imagefactory-arm64-tree-state")
	err := os.MkdirAll(state, 0o700)
	if err == nil {
		_, err = cleanup.Reap(state)
	}
	if err == nil {
		o.Journal, err = cleanup.Open(state, "arm64 tree for the tests")
	}
	if err != nil {
		arm64Tree.err = err
		close(arm64Tree.done)
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.Log = func(l string) {
		if strings.HasPrefix(l, "I: Second stage") || strings.HasPrefix(l, "I: initramfs") {
			arm64Tree.log = append(arm64Tree.log, l)
		}
	}
	go func() {
		defer close(arm64Tree.done)
		start := time.Now()
		_, _, arm64Tree.err = bootstrap.Tree(ctx, o)
		arm64Tree.took = time.Since(start)
		arm64Tree.err = errors.Join(arm64Tree.err, o.Journal.Close())
	}()
	return func() {
		cancel()
		<-arm64Tree.done
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
	t.Parallel() // after the sequential tests, while arm64Tree is made
	<-arm64Tree.done
	if arm64Tree.err != nil {
		t.Fatalf("making the arm64 tree: %v", arm64Tree.err)
	}
	if arm64Tree.took > 0 {
		t.Logf("arm64 tree made in the background in %s: %s", arm64Tree.took.Round(time.Second), strings.Join(arm64Tree.log, "; "))
	}
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
