package imagefactory_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// The qemu strategy's tests boot a real Debian 12 (kernel, initrd, sshd,
// cloud-init from scripts/debian-rootfs.sh) under QEMU with TCG, through
// the real Packer binary. The fixture disk has no boot loader: the image's
// own kernel is booted directly (boot_kernel = "image").

func requireQemu(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat("/usr/bin/" + qemu.DefaultBinary("")); err != nil {
		t.Skipf("needs %s (scripts/install-deps.sh): %v", qemu.DefaultBinary(""), err)
	}
}

// qemuSource is the source block of every qemu test: direct boot of the
// image's kernel, the SDK's SSH communicator.
const qemuSource = `
  strategy = "qemu"
  boot_kernel = "image"
  memory   = 1024
`

// The provisioner proves it runs in the booted guest, not in a chroot:
// PID 1 is the image's systemd, the running kernel is the image's, and
// sshd accepted the build's key. A file provisioner goes over SFTP/SCP.
const qemuProvisioners = `
  provisioner "shell" {
    inline = [
      "test \"$(cat /proc/1/comm)\" = systemd",
      "uname -r > /etc/factory-kernel",
      "systemctl is-active ssh",
      "/lib64/ld-linux-x86-64.so.2 --help > /etc/factory-hwcaps",
      "echo made-in-the-factory > /etc/factory-made",
    ]
  }
  provisioner "file" {
    content     = "uploaded over ssh\n"
    destination = "/etc/factory-upload"
  }
`

// TestAccQemu provisions a Debian 12 image over SSH, once reaching it
// through the cloud-init seed (ACPI power-down through QMP), once with the
// key injected offline into an image whose cloud-init is disabled
// (shutdown_command). Then it mounts the output and checks that nothing of
// the factory boot is left, and that the scrub post-processor with the
// same operations finds nothing to do. The images' glibc is marked as
// RHEL 9's (x86-64-v2) and as RHEL 10's (x86-64-v3): the builder must boot
// each with a CPU model that has the level (glibc refuses to run on a
// lesser one) and no more (cheaper under TCG); the other qemu tests boot
// Debian's own (baseline) with the least, qemu64.
func TestAccQemu(t *testing.T) {
	requireQemu(t)
	t.Parallel() // boots under TCG (one core): two such tests run at once, after the sequential ones
	for _, tc := range []struct {
		name      string
		opts      fixture.DebianOptions
		source    string
		cloudInit bool
		libcLevel byte   // GNU_PROPERTY_X86_ISA_1_NEEDED bits to mark the image's libc with, 0 to leave it
		cpuModel  string // the builder's choice
		hwcaps    string // the glibc-hwcaps level the guest's loader must support
		noHwcaps  string // and one it must not
	}{
		{"cidata-seed", fixture.DebianOptions{}, ``, true, 0b11, hostcap.TCGV2Model, "x86-64-v2 (supported", "x86-64-v3 (supported"},
		{"inject-ssh-key", fixture.DebianOptions{NoCloudInit: true}, `
  inject_ssh_key   = true
  shutdown_command = "systemctl poweroff"
`, false, 0b111, hostcap.TCGMaxModel, "x86-64-v3 (supported", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAcc(t)
			disk := fixture.DebianDisk(t, tc.opts)
			if tc.libcLevel != 0 {
				fixture.WithReadWriteMount(t, disk.Path, disk.Root(), func(dir string) { markLibc(t, dir, tc.libcLevel) })
			}
			var baseSSHD string
			fixture.WithReadOnlyMount(t, disk.Path, disk.Root(), func(dir string) { baseSSHD = sshdConfig(t, dir) })
			ops := `["` + strings.Join(qemu.FactoryBootOps, `", "`) + `"]`
			res := mustBuild(t, a, template(qemuSource+tc.source, qemuProvisioners+`
  post-processor "imagefactory-scrub" {
    operations = `+ops+`
  }
`), map[string]string{"base": disk.Path})
			out := filepath.Join(a.out(), "t.raw")
			assertQemuBuildSteps(t, res.Output)
			// Under KVM the model is the host's, with whatever it has.
			accel := accelLine.FindStringSubmatch(res.Output)
			tcg := accel != nil && accel[1] == hostcap.AccelTCG
			if tcg {
				if want := "CPU model: " + tc.cpuModel + " ("; !strings.Contains(res.Output, want) {
					t.Errorf("output lacks %q:\n%s", want, res.Output)
				}
			}

			console, err := os.ReadFile(filepath.Join(a.out(), "console.log"))
			if err != nil || !strings.Contains(string(console), "Linux version") {
				t.Errorf("console.log does not show the boot (%v):\n%.2000s", err, console)
			}

			fixture.WithReadOnlyMount(t, out, disk.Root(), func(dir string) {
				assertQemuProvisioned(t, dir)
				assertNoFactoryBoot(t, dir, tc.cloudInit)
				// The SBOM was read offline after the shutdown, from this image.
				if got, want := sbomPackages(readSBOM(t, out+".spdx.json"), "dpkg"), dpkgQuery(t, dir); !slices.Equal(got, want) {
					t.Errorf("the SBOM's dpkg packages differ from dpkg-query -W in the output: SBOM only %v, dpkg-query only %v", minus(got, want), minus(want, got))
				}
				hwcaps, _ := os.ReadFile(filepath.Join(dir, "etc/factory-hwcaps"))
				if tcg && (!strings.Contains(string(hwcaps), tc.hwcaps) || tc.noHwcaps != "" && strings.Contains(string(hwcaps), tc.noHwcaps)) {
					t.Errorf("the guest's loader, want %q and not %q:\n%s", tc.hwcaps, tc.noHwcaps, hwcaps)
				}
				if got := sshdConfig(t, dir); got != baseSSHD {
					t.Errorf("the factory boot changed the image's sshd configuration:\n--- base\n%s\n--- output\n%s", baseSSHD, got)
				}
			})

			// The scrub post-processor with the factory-boot operations
			// finds nothing left to do.
			var report struct {
				Changes []struct{ Op, Path, Action string } `json:"changes"`
			}
			b, err := os.ReadFile(filepath.Join(a.out(), "t.scrub.json"))
			if err != nil {
				t.Fatalf("no scrub report: %v", err)
			}
			if err := json.Unmarshal(b, &report); err != nil {
				t.Fatal(err)
			}
			if len(report.Changes) != 0 {
				t.Errorf("the scrub post-processor still found the factory boot: %+v", report.Changes)
			}
			assertNoQemuLeaks(t, a)
		})
	}
}

// TestAccQemuFaults: a failing provisioner and a Ctrl-C while a
// provisioner runs in the guest leave no QEMU, loop device, mount or
// journal, no output directory, and show the end of the serial console.
func TestAccQemuFaults(t *testing.T) {
	requireQemu(t)
	t.Parallel() // boots under TCG (one core): two such tests run at once, after the sequential ones
	t.Run("failing-provisioner", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.DebianDisk(t, fixture.DebianOptions{})
		res := a.Build(t, template(qemuSource, `provisioner "shell" { inline = ["echo about to fail", "exit 7"] }`),
			map[string]string{"base": disk.Path})
		if res.ExitCode == 0 {
			t.Fatalf("a failing provisioner built:\n%s", res.Output)
		}
		if !strings.Contains(res.Output, "exit status 7") && !strings.Contains(res.Output, "exit status: 7") {
			t.Errorf("the error does not name the exit status 7:\n%s", res.Output)
		}
		if !strings.Contains(res.Output, "Last lines of the serial console") {
			t.Errorf("the serial console was not shown:\n%s", res.Output)
		}
		if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
			t.Errorf("output directory left after a failed build")
		}
		assertNoQemuLeaks(t, a)
	})
	t.Run("cancel", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.DebianDisk(t, fixture.DebianOptions{})
		run := a.Start(t, template(qemuSource, `provisioner "shell" { inline = ["echo FACTORY-SLEEPING", "sleep 300"] }`),
			map[string]string{"base": disk.Path})
		run.WaitForOutput(t, "FACTORY-SLEEPING", 10*time.Minute)
		if n := qemuProcesses(a.Base); n != 1 {
			t.Fatalf("%d QEMU processes of this build while it provisions, want 1", n)
		}
		run.Interrupt(t, syscall.SIGINT)
		res := run.Wait()
		if res.ExitCode == 0 {
			t.Fatalf("a cancelled build succeeded:\n%s", res.Output)
		}
		if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
			t.Errorf("output directory left after a cancelled build")
		}
		assertNoQemuLeaks(t, a)
	})
}

// TestAccQemuKVMRefused: on a host where KVM cannot run a guest (the CI's
// /dev/kvm opens but its guests crawl), accelerator = "kvm" is refused in
// Prepare: packer build fails at once with a message naming KVM, the
// reason and the way out, and nothing boots. Skipped where hostcap proves
// KVM (nothing to refuse) or cannot probe it (kvm is then allowed).
func TestAccQemuKVMRefused(t *testing.T) {
	requireQemu(t)
	if v := hostcap.KVM(); v.Usable || v.Unproven {
		t.Skipf("KVM is not refused on this host: usable %v, unproven %v: %s", v.Usable, v.Unproven, v.Reason)
	} else {
		t.Logf("KVM on this host (probed in %s): %s", v.Took.Round(time.Millisecond), v.Reason)
	}
	a := newAcc(t)
	// The disk does not matter: nothing may get as far as reading it.
	base := fixture.SparseFile(t, 64<<20)
	run := a.Start(t, template(qemuSource+`  accelerator = "kvm"
`, qemuProvisioners), map[string]string{"base": base})
	// A deadline that stops a build which boots after all; no assertion
	// on the time itself.
	select {
	case <-waitDone(run):
	case <-time.After(60 * time.Second):
		t.Fatalf("packer build with accelerator = \"kvm\" still runs after 60s:\n%s", run.Output())
	}
	res := run.Wait()
	t.Logf("packer build refused accelerator = \"kvm\" in %s", res.Duration.Round(time.Millisecond))
	if res.ExitCode == 0 {
		t.Fatalf("packer build with accelerator = \"kvm\" succeeded:\n%s", res.Output)
	}
	for _, w := range []string{`accelerator = "kvm": KVM cannot run a guest on this host: /dev/kvm opens but`, `set accelerator = "tcg"`} {
		if !strings.Contains(res.Output, w) {
			t.Errorf("the error does not say %q:\n%s", w, res.Output)
		}
	}
	if strings.Contains(res.Output, "Booting the image under QEMU") {
		t.Errorf("the build booted:\n%s", res.Output)
	}
	if _, err := os.Stat(filepath.Join(a.out(), "console.log")); !os.IsNotExist(err) {
		t.Errorf("a console.log was written (%v): something booted", err)
	}
	if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
		t.Errorf("output directory left after a refused build")
	}
	assertNoQemuLeaks(t, a)
}

// waitDone is closed when run ends.
func waitDone(run *fixture.Run) <-chan struct{} {
	c := make(chan struct{})
	go func() { run.Wait(); close(c) }()
	return c
}

// assertQemuBuildSteps checks that a qemu strategy build said it went
// through every stage: the accelerator chosen and why (the templates set
// none: "auto" decides), boot, SSH, power-off, the offline clean-up.
func assertQemuBuildSteps(t *testing.T, output string) {
	t.Helper()
	if !accelLine.MatchString(output) {
		t.Errorf("output does not name the accelerator chosen and why (%s):\n%s", accelLine, output)
	} else {
		t.Logf("%s", accelLine.FindString(output))
	}
	for _, w := range []string{"CPU model: ", "Booting the image under QEMU", "Connected to SSH!", "Guest clock when SSH answered: ", "The guest powered off", "Removed what the factory boot left"} {
		if !strings.Contains(output, w) {
			t.Errorf("output lacks %q:\n%s", w, output)
		}
	}
}

// accelLine is the launch step's line naming the accelerator and the reason.
var accelLine = regexp.MustCompile(`Accelerator: (kvm|tcg) \(\S[^\n]*\)`)

// assertQemuProvisioned checks, in the output's mounted root, what
// qemuProvisioners left: their files, and the kernel the guest ran being
// the image's own.
func assertQemuProvisioned(t *testing.T, dir string) {
	t.Helper()
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(dir, p))
		return string(b)
	}
	if read("etc/factory-made") != "made-in-the-factory\n" || read("etc/factory-upload") != "uploaded over ssh\n" {
		t.Errorf("the provisioners' files are not in the output")
	}
	if k := strings.TrimSpace(read("etc/factory-kernel")); k == "" || !fileExists(filepath.Join(dir, "lib/modules", k)) {
		t.Errorf("the guest ran kernel %q, not the image's", k)
	}
}

// assertNoFactoryBoot checks, in the output's mounted root, that nothing
// the guest generated about itself during the factory boot is left: host
// keys, machine-id, the build's key and sshd drop-in, cloud-init's
// instance state and network configuration, leases. imageCloudInit says
// whether the image's cloud-init was enabled (else its own
// cloud-init.disabled must stay).
func assertNoFactoryBoot(t *testing.T, dir string, imageCloudInit bool) {
	t.Helper()
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(dir, p))
		return string(b)
	}
	if got := read("etc/machine-id"); got != "uninitialized\n" {
		t.Errorf("/etc/machine-id = %q, want uninitialized", got)
	}
	if keys, _ := filepath.Glob(filepath.Join(dir, "etc/ssh/ssh_host_*")); len(keys) > 0 {
		t.Errorf("the factory's SSH host keys are in the output: %v", keys)
	}
	for _, p := range []string{
		"root/.ssh/authorized_keys", "var/lib/cloud/instances", "var/lib/cloud/instance", "var/lib/cloud/data",
		"var/lib/systemd/random-seed", "etc/ssh/sshd_config.d/00-imagefactory-build.conf",
	} {
		if fileExists(filepath.Join(dir, p)) {
			t.Errorf("/%s is in the output", p)
		}
	}
	if gen, _ := filepath.Glob(filepath.Join(dir, "etc/systemd/network/10-cloud-init-*")); len(gen) > 0 {
		t.Errorf("cloud-init's network configuration of the factory boot is in the output: %v", gen)
	}
	if leases, _ := filepath.Glob(filepath.Join(dir, "var/lib/dhcp/*")); len(leases) > 0 {
		t.Errorf("DHCP leases in the output: %v", leases)
	}
	if !imageCloudInit && fileExists(filepath.Join(dir, "usr/bin/cloud-init")) && !fileExists(filepath.Join(dir, "etc/cloud/cloud-init.disabled")) {
		t.Errorf("the image's own cloud-init.disabled went")
	}
	if strings.Contains(read("var/log/cloud-init.log"), "imagefactory") {
		t.Errorf("cloud-init's log of the factory boot is in the output")
	}
}

// markLibc sets the GNU_PROPERTY_X86_ISA_1_NEEDED bits in the note of
// the Debian libc.so.6 under root (Debian marks it with the baseline bit
// alone, as `readelf -n` shows), as glibc built with -march=x86-64-v3
// (RHEL 10) is marked.
func markLibc(t *testing.T, root string, bits byte) {
	t.Helper()
	p := filepath.Join(root, "usr/lib/x86_64-linux-gnu/libc.so.6")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// pr_type 0xc0008002, pr_datasz 4, the baseline bit.
	prop := []byte{0x02, 0x80, 0x00, 0xc0, 4, 0, 0, 0, 1, 0, 0, 0}
	i := bytes.Index(b, prop)
	if i < 0 || bytes.Count(b, prop) != 1 {
		t.Fatalf("%s: want exactly one x86 ISA needed property of the baseline", p)
	}
	b[i+8] = bits
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// sshdConfig is the image's sshd configuration under root: sshd_config
// and each drop-in in sshd_config.d, by name, with their content.
func sshdConfig(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(root, "etc/ssh/sshd_config.d/*"))
	for _, f := range append([]string{filepath.Join(root, "etc/ssh/sshd_config")}, files...) {
		c, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("reading the image's sshd configuration: %v", err)
		}
		fmt.Fprintf(&b, "== %s\n%s", strings.TrimPrefix(f, root), c)
	}
	return b.String()
}

// fileExists: path exists (a dangling link counts).
func fileExists(path string) bool { _, err := os.Lstat(path); return err == nil }

// assertNoQemuLeaks checks, scoped to this test's own directory (other
// builds run on the machine at the same time), that no loop device backed
// by its files, no mount in it or on such a loop device (the qemu
// strategy's offline steps mount under /run/imagefactory/mnt), no process
// (QEMU, qemu-storage-daemon, qemu-img...) holding its files is left, and
// no journal.
func assertNoQemuLeaks(t *testing.T, a *acc) {
	t.Helper()
	a.before.AssertNoLeaksIn(t, a.Base)
	if journals, _ := filepath.Glob(filepath.Join(a.state, "*.journal")); len(journals) > 0 {
		t.Errorf("journals left in %s: %v", a.state, journals)
	}
}

// qemuProcesses counts running QEMUs whose command line names a path
// under dir.
func qemuProcesses(dir string) int {
	n := 0
	ents, err := os.ReadDir("/proc")
	if err != nil { // an empty answer would pass a check for leftovers
		panic(err)
	}
	for _, e := range ents {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%s/cmdline", e.Name()))
		if err != nil {
			continue
		}
		cmd := string(raw)
		if strings.Contains(cmd, "qemu-system") && strings.Contains(cmd, dir) {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%s/stat", e.Name())); !strings.Contains(string(st), ") Z ") {
				n++
			}
		}
	}
	return n
}
