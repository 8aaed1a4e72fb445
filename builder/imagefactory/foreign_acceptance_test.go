package imagefactory_test

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// foreignBuild is the provisioning of the foreign-architecture tests: the
// machine as the image's programs see it, the generated data, a file
// written into the root by a shell and a file provisioner, and a check
// that nothing of qemu sits in the image. Then scrub and sparsify.
const foreignBuild = `
  provisioner "shell" {
    inline = [
      "echo UNAME=$(uname -m)",
      "echo GENERATED=${build.Architecture}",
      "echo in-root > /root/written-in-root",
      "sed -i 's/rootwait/rootwait imagefactory/' /boot/firmware/cmdline.txt",
      "ls /usr/bin/qemu-* /usr/libexec/qemu-binfmt 2>/dev/null || echo NO-QEMU-IN-IMAGE",
      "if /usr/sbin/policy-rc.d nginx start; then echo POLICY-RC-D=0; else echo POLICY-RC-D=$?; fi",
      "grep -q imagefactory-fixture /etc/resolv.conf || echo RESOLV-CONF-IS-THE-HOSTS",
    ]
  }
  provisioner "imagefactory-elements" {
    elements      = ["arch-sh"]
    elements_path = [var.elements]
  }
  provisioner "file" {
    content     = "from the file provisioner\n"
    destination = "/root/uploaded"
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {}
  }
`

// TestAccForeignChroot: Raspberry Pi OS-like disks (MBR, FAT32 bootfs,
// ext4 rootfs) of armhf and arm64 Debian busybox, provisioned in the
// chroot under qemu-user on this amd64 host. The host's binfmt_misc is
// the same before and after each build, byte for byte: one that succeeds,
// one whose provisioner fails, one killed with SIGKILL and the next build.
func TestAccForeignChroot(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct{ arch, uname string }{{"armhf", "armv7l"}, {"arm64", "aarch64"}} {
		t.Run(c.arch, func(t *testing.T) {
			if _, err := os.Stat(fmt.Sprintf("/usr/bin/qemu-%s-static", map[string]string{"armhf": "arm", "arm64": "aarch64"}[c.arch])); err != nil {
				t.Skipf("qemu-user-static: %v", err)
			}
			disk := fixture.FirmwareDisk(t, fixture.FirmwareDiskOptions{Arch: c.arch})
			baseSum := fixture.Sha256(t, disk.Path)

			t.Run("build", func(t *testing.T) {
				a := newAcc(t)
				before := fixture.Binfmt(t)
				res := mustBuild(t, a, `variable "elements" { type = string }`+template(fmt.Sprintf(`  architecture = %q`, c.arch), foreignBuild),
					map[string]string{"base": disk.Path, "elements": archElement(t)})
				out := res.Output
				t.Logf("build output:\n%s", out)
				for _, want := range []string{
					"Image architecture: " + c.arch,
					"binfmt_misc: ",
					"UNAME=" + c.uname,
					"GENERATED=" + c.arch,
					"NO-QEMU-IN-IMAGE",
					"POLICY-RC-D=101", // policy-rc.d(8): 101, action forbidden
					"RESOLV-CONF-IS-THE-HOSTS",
					// The FAT partition, staged for the provisioners.
					"/boot/firmware",
				} {
					if !strings.Contains(out, want) {
						t.Errorf("the output lacks %q:\n%s", want, out)
					}
				}
				fixture.CheckBinfmt(t, before)
				if fixture.Sha256(t, disk.Path) != baseSum {
					t.Error("the base image changed")
				}
				img := filepath.Join(a.out(), "t.raw")
				root := disk.Partitions[1]
				fixture.FsckPartition(t, img, root)
				if got := readOut(t, img, root, "/root/written-in-root"); got != "in-root\n" {
					t.Errorf("/root/written-in-root = %q", got)
				}
				if got := readOut(t, img, root, "/root/uploaded"); got != "from the file provisioner\n" {
					t.Errorf("/root/uploaded = %q", got)
				}
				// DIB's ARCH, from the image (internal/arch), inside it.
				if got := readOut(t, img, root, "/root/elements.out"); got != c.arch+" "+c.uname+"\n" {
					t.Errorf("/root/elements.out = %q, want %q", got, c.arch+" "+c.uname+"\n")
				}
				// The image's own resolv.conf is back; no policy-rc.d left.
				if got := readOut(t, img, root, "/etc/resolv.conf"); !strings.Contains(got, fixture.ResolvConfMarker) {
					t.Errorf("/etc/resolv.conf = %q", got)
				}
				fixture.WithReadOnlyMount(t, img, root, func(dir string) {
					if _, err := os.Lstat(filepath.Join(dir, "usr/sbin/policy-rc.d")); err == nil {
						t.Error("policy-rc.d left in the image")
					}
				})
				noInterpreter(t, img, root)
				// The provisioner's edit of the FAT partition, run by the
				// image's own (emulated) sed, is in the output.
				fixture.FsckPartition(t, img, disk.Partitions[0])
				want := strings.Replace(fixture.FirmwareCmdline, "rootwait", "rootwait imagefactory", 1)
				if got, _ := fixture.FATFile(t, img, disk.Partitions[0], "/cmdline.txt"); got != want {
					t.Errorf("cmdline.txt in the output's FAT = %q, want %q", got, want)
				}
				a.assertNoLeaks(t)
			})

			if c.arch == "arm64" {
				t.Run("host-registration", func(t *testing.T) {
					a := newAcc(t)
					before := fixture.Binfmt(t)
					name, remove := hostRegistration(t, "aarch64")
					withHost := fixture.Binfmt(t)
					res := mustBuild(t, a, template(``, `provisioner "shell" { inline = ["echo UNAME=$(uname -m)"] }`), map[string]string{"base": disk.Path})
					if !strings.Contains(res.Output, "binfmt_misc: the host's binfmt_misc registration "+name) || !strings.Contains(res.Output, "UNAME=aarch64") {
						t.Errorf("the build did not use the host's registration %s:\n%s", name, res.Output)
					}
					if got := fixture.Binfmt(t)[name]; got != withHost[name] {
						t.Errorf("the host's registration changed:\nbefore %q\nafter  %q", withHost[name], got)
					}
					fixture.CheckBinfmt(t, withHost)
					a.assertNoLeaks(t)
					remove()
					fixture.CheckBinfmt(t, before)
				})
				return
			}
			// The failure paths do not depend on the architecture.
			t.Run("failing-provisioner", func(t *testing.T) {
				a := newAcc(t)
				before := fixture.Binfmt(t)
				res := a.Build(t, template(``, `provisioner "shell" { inline = ["uname -m", "exit 7"] }`), map[string]string{"base": disk.Path})
				if res.ExitCode == 0 || !strings.Contains(res.Output, "armv7l") {
					t.Fatalf("exit %d; want a failure after uname -m printed armv7l:\n%s", res.ExitCode, res.Output)
				}
				fixture.CheckBinfmt(t, before)
				a.assertNoLeaks(t)
			})
			t.Run("sigkill-then-new-build", func(t *testing.T) {
				a := newAcc(t)
				before := fixture.Binfmt(t)
				killed := killMidBuild(t, a, template(``, `provisioner "shell" { inline = ["echo FACTORY-SLEEPING", "sleep 300"] }`),
					map[string]string{"base": disk.Path, "out": "killed"})
				if !strings.Contains(killed, "binfmt_misc: ") {
					t.Fatalf("the killed build did not enable armhf:\n%s", killed)
				}
				// The killed build left its registration: otherwise this
				// test proves nothing about the reaper.
				if _, err := os.Stat("/proc/sys/fs/binfmt_misc/imagefactory-qemu-arm"); err != nil {
					t.Fatalf("the killed build left no registration: %v", err)
				}
				res := mustBuild(t, a, template(``, `provisioner "shell" { inline = ["uname -m"] }`), map[string]string{"base": disk.Path})
				if !strings.Contains(res.Output, "Released what an earlier, killed build left behind") || !strings.Contains(res.Output, "imagefactory-qemu-arm") {
					t.Errorf("the new build did not report reaping the killed one's registration:\n%s", res.Output)
				}
				t.Logf("new build:\n%s", res.Output)
				fixture.CheckBinfmt(t, before)
				a.assertNoLeaks(t)
			})
		})
	}
}

// hostRegistration registers qemu-QEMU-static as the host would (Debian's
// /usr/lib/binfmt.d/qemu-QEMU.conf, flags F only) under a name of ours, so
// that other tests' leak checks running at the same time tolerate it, and
// through a share of this test's own, so that it goes even if the test is
// killed. remove (also run at cleanup) removes it.
func hostRegistration(t *testing.T, qemu string) (name string, remove func()) {
	t.Helper()
	conf, err := os.ReadFile("/usr/lib/binfmt.d/qemu-" + qemu + ".conf")
	if err != nil {
		t.Skipf("qemu-user-static's binfmt configuration for %s: %v", qemu, err)
	}
	f := strings.Split(strings.TrimSpace(string(conf)), ":")
	name = cleanup.BinfmtPrefix + "test-host-qemu-" + qemu
	j, err := cleanup.Open(filepath.Join(t.TempDir(), "host-state"), "host registration")
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	remove = func() {
		once.Do(func() {
			if err := j.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(remove)
	unlock, err := cleanup.LockBinfmt()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := j.TakeBinfmt(name); err != nil {
		t.Fatal(err)
	}
	if !cleanup.BinfmtMounted() {
		if err := cleanup.MarkBinfmtMount(); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("binfmt_misc", cleanup.BinfmtMisc, "binfmt_misc", 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	reg := fmt.Sprintf(":%s:M::%s:%s:/usr/bin/qemu-%s-static:F", name, f[4], f[5], qemu)
	if err := os.WriteFile(filepath.Join(cleanup.BinfmtMisc, "register"), []byte(reg), 0); err != nil {
		t.Fatal(err)
	}
	return name, remove
}

// archElement is an elements directory with arch-sh, a POSIX sh element
// that writes DIB's ARCH and the machine it runs on.
func archElement(t *testing.T) string {
	dir := t.TempDir()
	p := filepath.Join(dir, "arch-sh/install.d/50-arch")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\nset -eu\necho \"$ARCH $(uname -m)\" > /root/elements.out\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// noInterpreter fails if any qemu-user interpreter is in the image's root.
func noInterpreter(t *testing.T, img string, p fixture.Partition) {
	t.Helper()
	fixture.WithReadOnlyMount(t, img, p, func(dir string) {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), "qemu-") {
				t.Errorf("qemu in the image: %s", strings.TrimPrefix(path, dir))
			}
			return nil
		})
	})
}

// TestAccForeignBadInput: an architecture mismatch, a host without the
// interpreter, an image whose /bin/sh is for a machine QEMU does not
// emulate: one clear error each, the base image untouched, nothing left.
func TestAccForeignBadInput(t *testing.T) {
	requireRoot(t)
	armhf := fixture.FirmwareDisk(t, fixture.FirmwareDiskOptions{Arch: "armhf"})
	unknown := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) {
		// A static ELF for e_machine 0x6666, which no one has assigned.
		hdr := make([]byte, 64)
		copy(hdr, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
		binary.LittleEndian.PutUint16(hdr[16:], 2)
		binary.LittleEndian.PutUint16(hdr[18:], 0x6666)
		binary.LittleEndian.PutUint32(hdr[20:], 1)
		binary.LittleEndian.PutUint16(hdr[52:], 64)
		os.WriteFile(filepath.Join(dir, "bin/busybox"), hdr, 0o755)
	}})
	for _, c := range []struct {
		name, source string
		disk         fixture.DiskInfo
		env          []string
		want         *regexp.Regexp
	}{
		{"mismatch", `  architecture = "arm64"`, armhf, nil,
			regexp.MustCompile(`base image \S+raspi.img is armhf .*architecture = "arm64"`)},
		{"no-interpreter", ``, armhf, []string{"IMAGEFACTORY_TEST_QEMU_USER_DIR=/nonexistent"},
			regexp.MustCompile(`is armhf, which this amd64 host cannot run in a chroot: no qemu-user interpreter for armhf: /nonexistent/qemu-arm-static is missing .*install Debian's package qemu-user-static`)},
		// The qemu strategy checks the pin offline, before any boot.
		{"qemu-mismatch", qemuSource + `  architecture = "arm64"`, fixture.NewDisk(t, fixture.DiskOptions{}), nil,
			regexp.MustCompile(`base image \S+ is amd64 .*architecture = "arm64"`)},
		{"unknown-machine", ``, unknown, nil,
			regexp.MustCompile(`base image \S+ reading its architecture: /bin/sh -> /bin/busybox of the image: unknown architecture: e_machine 26214`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newAcc(t)
			a.Env = append(a.Env, c.env...)
			before := fixture.Binfmt(t)
			sum := fixture.Sha256(t, c.disk.Path)
			res := a.Build(t, template(c.source, `provisioner "shell" { inline = ["echo PROVISIONED"] }`), map[string]string{"base": c.disk.Path})
			if res.ExitCode == 0 || !c.want.MatchString(res.Output) || strings.Contains(res.Output, "PROVISIONED") {
				t.Fatalf("exit %d; want an error matching %s before provisioning:\n%s", res.ExitCode, c.want, res.Output)
			}
			if fixture.Sha256(t, c.disk.Path) != sum {
				t.Error("the base image changed")
			}
			if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
				t.Errorf("output directory left after a failed build")
			}
			fixture.CheckBinfmt(t, before)
			a.assertNoLeaks(t)
		})
	}
}
