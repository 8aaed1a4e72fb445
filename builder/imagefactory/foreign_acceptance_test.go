package imagefactory_test

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
      "ls /usr/bin/qemu-* /usr/libexec/qemu-binfmt 2>/dev/null || echo NO-QEMU-IN-IMAGE",
    ]
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
			disk := fixture.RaspiDisk(t, c.arch, 0)
			baseSum := fixture.Sha256(t, disk.Path)

			t.Run("build", func(t *testing.T) {
				a := newAcc(t)
				before := fixture.Binfmt(t)
				res := mustBuild(t, a, template(fmt.Sprintf(`  architecture = %q`, c.arch), foreignBuild), map[string]string{"base": disk.Path})
				out := res.Output
				t.Logf("build output:\n%s", out)
				for _, want := range []string{
					"Image architecture: " + c.arch,
					"binfmt_misc: ",
					"UNAME=" + c.uname,
					"GENERATED=" + c.arch,
					"NO-QEMU-IN-IMAGE",
					// The FAT partition: the builder's placeholder until it
					// can be mounted here.
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
				noInterpreter(t, img, root)
				// The FAT partition comes out as it went in.
				if got, want := partitionSum(t, img, disk.Partitions[0]), partitionSum(t, disk.Path, disk.Partitions[0]); got != want {
					t.Error("the bootfs partition changed")
				}
				a.assertNoLeaks(t)
			})

			if c.arch != "armhf" {
				return // the failure paths do not depend on the architecture
			}
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

// partitionSum is the sha256 of partition p's bytes in img.
func partitionSum(t *testing.T, img string, p fixture.Partition) string {
	t.Helper()
	b := make([]byte, p.Size)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, p.Offset); err != nil {
		t.Fatal(err)
	}
	side := filepath.Join(t.TempDir(), "part")
	if err := os.WriteFile(side, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return fixture.Sha256(t, side)
}

// TestAccForeignBadInput: an architecture mismatch, a host without the
// interpreter, an image whose /bin/sh is for a machine QEMU does not
// emulate: one clear error each, the base image untouched, nothing left.
func TestAccForeignBadInput(t *testing.T) {
	requireRoot(t)
	armhf := fixture.RaspiDisk(t, "armhf", 0)
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
			regexp.MustCompile(`base image \S+raspi-armhf.img is armhf .*architecture = "arm64"`)},
		{"no-interpreter", ``, armhf, []string{"IMAGEFACTORY_TEST_QEMU_USER_DIR=/nonexistent"},
			regexp.MustCompile(`is armhf, which this amd64 host cannot run in a chroot: no qemu-user interpreter for armhf: /nonexistent/qemu-arm-static is missing .*install Debian's package qemu-user-static`)},
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
