package imagefactory_test

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// The acceptance tests drive the real Packer binary (bin/packer, `make
// tools`) with the plugin built from this repository, on fixture images the
// tests make themselves, with real loop devices and mounts. They need root.

func TestMain(m *testing.M) {
	flag.Parse()
	stop := prewarmArm64()
	code := m.Run()
	stop()
	fixture.RemoveCache()
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("acceptance tests attach loop devices and mount filesystems: run them as root")
	}
}

// template is a build of one imagefactory source with extra source
// settings and build blocks (provisioners).
func template(source, build string) string {
	return `
variable "base" { type = string }
variable "out" {
  type    = string
  default = "out"
}
source "imagefactory" "t" {
  base_image       = var.base
  output_directory = var.out
` + source + `
}
build {
  sources = ["source.imagefactory.t"]
` + build + `
}
`
}

// acc is one acceptance test's Packer harness, its state directory for the
// cleanup journals, and the leak snapshot taken before it started.
type acc struct {
	*fixture.Harness
	before fixture.Snapshot
	state  string
}

func newAcc(t *testing.T) *acc {
	t.Helper()
	requireRoot(t)
	a := &acc{Harness: fixture.Packer(t), before: fixture.LeakSnapshot()}
	a.state = filepath.Join(a.Base, "state")
	a.Env = append(a.Env, "IMAGEFACTORY_STATE_DIR="+a.state)
	return a
}

// out is the output directory of a build run in the harness.
func (a *acc) out() string { return filepath.Join(a.Dir, "out") }

// assertNoLeaks checks that no loop device, mount or process of the build
// is left, and that no journal is left in the state directory (a sandbox
// cgroup left behind is one of its entries). Scoped to the harness's
// directory and its builds' mount paths: other tests' builds run beside
// it, mounted under the same /run/imagefactory/mnt, and a build of theirs
// killed on purpose leaves its cgroup until their next build.
func (a *acc) assertNoLeaks(t *testing.T) {
	t.Helper()
	a.before.AssertNoLeaksUnder(t, a.OwnDirs()...)
	journals, _ := filepath.Glob(filepath.Join(a.state, "*.journal"))
	if len(journals) > 0 {
		t.Errorf("journals left in %s: %v", a.state, journals)
	}
}

func mustBuild(t *testing.T, a *acc, tmpl string, vars map[string]string) fixture.Result {
	t.Helper()
	res := a.Build(t, tmpl, vars)
	if res.ExitCode != 0 {
		t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}
	return res
}

func readOut(t *testing.T, img string, p fixture.Partition, path string) string {
	t.Helper()
	return string(fixture.ReadFileFromPartition(t, img, p, path))
}

func debianTree(dir string) {
	os.WriteFile(filepath.Join(dir, "etc/debian_version"), []byte("12.0\n"), 0o644)
}

// TestAccChrootProvisioners builds on MBR and GPT disks with a separate
// /boot (mounted from the image's fstab by UUID), runs a shell and a file
// provisioner in the chroot, and checks the output image from outside.
func TestAccChrootProvisioners(t *testing.T) {
	for _, table := range []string{"mbr", "gpt"} {
		t.Run(table, func(t *testing.T) {
			a := newAcc(t)
			disk := fixture.NewDisk(t, fixture.DiskOptions{Table: table, SeparateBoot: true, Tree: debianTree})
			baseSum := fixture.Sha256(t, disk.Path)
			upload := filepath.Join(a.Dir, "upload.txt")
			if err := os.WriteFile(upload, []byte("from the file provisioner\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			res := mustBuild(t, a, template(`
  environment = { FACTORY_VAR = "from-environment" }
`, fmt.Sprintf(`
  provisioner "shell" {
    inline = [
      "echo built-by-shell > /etc/factory-marker",
      "echo on-boot > /boot/factory-boot-marker",
      "cat /etc/resolv.conf > /root/resolv-during-build",
      "test -x /usr/sbin/policy-rc.d && echo blocked > /root/policy-during-build",
      "echo $FACTORY_VAR > /root/env-during-build",
      "test -e /proc/self/status && test -d /sys/kernel && test -c /dev/null && echo ok > /root/mounts-during-build",
    ]
  }
  provisioner "file" {
    source      = %q
    destination = "/root/uploaded.txt"
  }
`, upload)), map[string]string{"base": disk.Path})

			img := filepath.Join(a.out(), "t.raw")
			root := disk.Root()
			boot, _ := disk.Find("/boot")
			checks := []struct {
				part fixture.Partition
				path string
				want string
			}{
				{root, "/etc/factory-marker", "built-by-shell\n"},
				{boot, "/factory-boot-marker", "on-boot\n"},
				{root, "/root/uploaded.txt", "from the file provisioner\n"},
				{root, "/root/policy-during-build", "blocked\n"},
				{root, "/root/env-during-build", "from-environment\n"},
				{root, "/root/mounts-during-build", "ok\n"},
			}
			for _, c := range checks {
				if got := readOut(t, img, c.part, c.path); got != c.want {
					t.Errorf("%s in the output: got %q, want %q", c.path, got, c.want)
				}
			}
			hostResolv, _ := os.ReadFile("/etc/resolv.conf")
			if got := readOut(t, img, root, "/root/resolv-during-build"); got != string(hostResolv) {
				t.Errorf("resolv.conf during the build: got %q, want the host's %q", got, hostResolv)
			}
			if got := readOut(t, img, root, "/etc/resolv.conf"); !strings.Contains(got, fixture.ResolvConfMarker) {
				t.Errorf("the image's own /etc/resolv.conf was not restored: %q", got)
			}
			if fixture.FileExistsOnDisk(t, img, root.Offset, "/usr/sbin/policy-rc.d") {
				t.Error("policy-rc.d left in the output image")
			}
			if fixture.FileExistsOnDisk(t, img, root.Offset, "/boot/factory-boot-marker") {
				t.Error("/boot was written to the root filesystem instead of the boot partition")
			}
			if fixture.FileExistsOnDisk(t, img, boot.Offset, "/boot") {
				t.Error("the boot partition holds a /boot directory: it was mounted somewhere other than /boot")
			}
			fixture.FsckPartition(t, img, root)
			fixture.FsckPartition(t, img, boot)
			if got := fixture.Sha256(t, disk.Path); got != baseSum {
				t.Errorf("the base image changed: sha256 %s, was %s", got, baseSum)
			}
			if !strings.Contains(res.Output, "Mounted /boot") {
				t.Errorf("the build did not report mounting /boot from the fstab:\n%s", res.Output)
			}
			a.assertNoLeaks(t)
		})
	}
}

// TestAccBaseFormats starts from qcow2, compressed and whole-disk base
// images (detected by content: every file is named .img) and makes raw and
// qcow2 artifacts.
func TestAccBaseFormats(t *testing.T) {
	cases := []struct {
		name   string
		base   func(t *testing.T, raw string) string
		table  string
		format string
	}{
		{"qcow2", func(t *testing.T, raw string) string { return fixture.QCOW2(t, raw) }, "mbr", "raw"},
		{"gzip", func(t *testing.T, raw string) string { return fixture.Compress(t, raw, "gz") }, "gpt", "raw"},
		{"xz", func(t *testing.T, raw string) string { return fixture.Compress(t, raw, "xz") }, "mbr", "raw"},
		{"zstd-qcow2", func(t *testing.T, raw string) string { return fixture.Compress(t, fixture.QCOW2(t, raw), "zst") }, "gpt", "qcow2"},
		{"whole-disk-to-qcow2", func(t *testing.T, raw string) string { return raw }, "none", "qcow2"},
		{"vmdk", func(t *testing.T, raw string) string { return convertTo(t, raw, "vmdk") }, "mbr", "raw"},
		{"vhdx", func(t *testing.T, raw string) string { return convertTo(t, raw, "vhdx") }, "gpt", "raw"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newAcc(t)
			disk := fixture.NewDisk(t, fixture.DiskOptions{Table: c.table})
			base := filepath.Join(t.TempDir(), "base.img") // the name says nothing of the format
			if err := os.Rename(c.base(t, disk.Path), base); err != nil {
				t.Fatal(err)
			}
			baseSum := fixture.Sha256(t, base)
			mustBuild(t, a, template(fmt.Sprintf("  format = %q", c.format), `
  provisioner "shell" { inline = ["echo `+c.name+` > /etc/factory-marker"] }
`), map[string]string{"base": base})

			img := filepath.Join(a.out(), "t."+c.format)
			if c.format == "qcow2" {
				if got := qemuImgFormat(t, img); got != "qcow2" {
					t.Fatalf("artifact format: got %s, want qcow2", got)
				}
				img = toRaw(t, img)
			}
			if got := readOut(t, img, disk.Root(), "/etc/factory-marker"); got != c.name+"\n" {
				t.Errorf("marker: got %q", got)
			}
			fixture.FsckPartition(t, img, disk.Root())
			if fixture.Sha256(t, base) != baseSum {
				t.Error("the base image changed")
			}
			leftovers, _ := filepath.Glob(filepath.Join(a.out(), ".*"))
			if len(leftovers) > 0 {
				t.Errorf("working files left in the output directory: %v", leftovers)
			}
			a.assertNoLeaks(t)
		})
	}
}

// TestAccURLBase downloads the base image from a server on loopback through
// the SDK's download step: with the right checksum it builds, with a wrong
// one it fails clearly and leaves nothing.
func TestAccURLBase(t *testing.T) {
	disk := fixture.NewDisk(t, fixture.DiskOptions{})
	qcow := fixture.QCOW2(t, disk.Path)
	srv := serveFile(t, qcow)
	sum := fixture.Sha256(t, qcow)

	t.Run("checksum-ok", func(t *testing.T) {
		a := newAcc(t)
		mustBuild(t, a, template(`  base_image_checksum = "sha256:`+sum+`"`,
			`provisioner "shell" { inline = ["echo downloaded > /etc/factory-marker"] }`),
			map[string]string{"base": srv + "/images/base.qcow2"})
		img := filepath.Join(a.out(), "t.raw")
		if got := readOut(t, img, disk.Root(), "/etc/factory-marker"); got != "downloaded\n" {
			t.Errorf("marker: got %q", got)
		}
		a.assertNoLeaks(t)
	})
	// Two images served side by side and a SHA256SUMS naming both, as a
	// distribution's mirror has them: the build takes the line of the file
	// it downloads (its output holds that image's marker), and a SHA256SUMS
	// whose line for that file holds the other's sum fails it.
	t.Run("checksum-file", func(t *testing.T) {
		dir := t.TempDir()
		marked := func(name string) string {
			d := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(root string) {
				if err := os.WriteFile(filepath.Join(root, "etc/which-image"), []byte(name+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}})
			q := filepath.Join(dir, name+".qcow2")
			if err := os.Rename(fixture.QCOW2(t, d.Path), q); err != nil {
				t.Fatal(err)
			}
			return fixture.Sha256(t, q)
		}
		sumA, sumB := marked("a"), marked("b")
		mirror := httptest.NewServer(http.StripPrefix("/images/", http.FileServer(http.Dir(dir))))
		t.Cleanup(mirror.Close)
		sums := func(text string) string {
			if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			return `  base_image_checksum = "file:` + mirror.URL + `/images/SHA256SUMS"`
		}
		base := map[string]string{"base": mirror.URL + "/images/a.qcow2"}

		a := newAcc(t)
		mustBuild(t, a, template(sums(sumB+"  b.qcow2\n"+sumA+"  a.qcow2\n"), `provisioner "shell" { inline = ["true"] }`), base)
		if got := readOut(t, filepath.Join(a.out(), "t.raw"), disk.Root(), "/etc/which-image"); got != "a\n" {
			t.Errorf("the output is made from the image marked %q, want a.qcow2's", got)
		}
		a.assertNoLeaks(t)

		a = newAcc(t)
		res := a.Build(t, template(sums(sumA+"  b.qcow2\n"+sumB+"  a.qcow2\n"), `provisioner "shell" { inline = ["true"] }`), base)
		if want := "its checksum is " + sumA + ", not the " + sumB + " of base_image_checksum"; res.ExitCode == 0 || !strings.Contains(res.Output, want) {
			t.Errorf("a SHA256SUMS giving a.qcow2 the other image's sum must fail the build, saying %q; exit %d:\n%s", want, res.ExitCode, res.Output)
		}
		a.assertNoLeaks(t)
	})
	t.Run("checksum-wrong", func(t *testing.T) {
		a := newAcc(t)
		wrong := strings.Repeat("0", 64)
		res := a.Build(t, template(`  base_image_checksum = "sha256:`+wrong+`"`,
			`provisioner "shell" { inline = ["true"] }`),
			map[string]string{"base": srv + "/images/base.qcow2"})
		if res.ExitCode == 0 {
			t.Fatalf("a wrong checksum built:\n%s", res.Output)
		}
		if !strings.Contains(strings.ToLower(res.Output), "checksum") {
			t.Errorf("the error does not name the checksum:\n%s", res.Output)
		}
		if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
			t.Errorf("output directory left behind after a failed build: %v", err)
		}
		a.assertNoLeaks(t)
	})
	// A downloaded image that names other files could make qemu-img read
	// host files into the working disk: refused.
	for _, c := range []struct{ name, want string }{
		{"qcow2-with-backing-file", "backing file"},
		{"vmdk-descriptor", "vmdk descriptor"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newAcc(t)
			dir := t.TempDir()
			img := filepath.Join(dir, "hostile.img")
			args := []string{"create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", img}
			if c.name == "vmdk-descriptor" {
				args = []string{"create", "-f", "vmdk", "-o", "subformat=monolithicFlat", img, "16M"}
			}
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img %v: %v: %s", args, err, out)
			}
			srv := serveFile(t, img)
			res := a.Build(t, template(`  base_image_checksum = "sha256:`+fixture.Sha256(t, img)+`"`,
				`provisioner "shell" { inline = ["true"] }`),
				map[string]string{"base": srv + "/images/hostile.img"})
			if res.ExitCode == 0 || !strings.Contains(res.Output, c.want) {
				t.Errorf("want a refusal naming the %s; exit %d:\n%s", c.want, res.ExitCode, res.Output)
			}
			a.assertNoLeaks(t)
		})
	}
	t.Run("url-without-checksum", func(t *testing.T) {
		a := newAcc(t)
		res := a.Build(t, template(``, `provisioner "shell" { inline = ["true"] }`),
			map[string]string{"base": srv + "/images/base.qcow2"})
		if res.ExitCode == 0 || !strings.Contains(res.Output, "base_image_checksum is required") {
			t.Errorf("want a clear configuration error, got exit %d:\n%s", res.ExitCode, res.Output)
		}
	})
}

// TestAccDiskSize grows the disk, its last partition and the filesystem:
// the filesystem sees the new size from inside the chroot, and its checker
// is clean afterwards.
func TestAccDiskSize(t *testing.T) {
	cases := []struct {
		table, fs string
	}{
		{"mbr", "ext4"},
		{"gpt", "ext4"},
		{"none", "ext4"},
		{"gpt", "xfs"},
		{"mbr", "btrfs"},
	}
	for _, c := range cases {
		t.Run(c.table+"-"+c.fs, func(t *testing.T) {
			a := newAcc(t)
			disk := fixture.NewDisk(t, fixture.DiskOptions{Table: c.table, RootFS: c.fs})
			newSize := disk.Size + 512<<20
			mustBuild(t, a, template(fmt.Sprintf("  disk_size = \"%d\"", newSize), `
  provisioner "shell" { inline = ["df -k / | tail -n 1 | awk '{print $2}' > /root/size-kib"] }
`), map[string]string{"base": disk.Path})

			img := filepath.Join(a.out(), "t.raw")
			fi, err := os.Stat(img)
			if err != nil || fi.Size() != newSize {
				t.Fatalf("artifact size: %v, %v; want %d", fi, err, newSize)
			}
			// The grown partition, as the table now describes it.
			root := disk.Root()
			root.Size = grownSize(t, img, root)
			var kib int64
			fmt.Sscan(readOut(t, img, root, "/root/size-kib"), &kib)
			if min := (disk.Root().Size + 400<<20) / 1024; kib < min {
				t.Errorf("the filesystem saw %d KiB during the build; want at least %d", kib, min)
			}
			fixture.FsckPartition(t, img, root)
			if c.table == "gpt" {
				verifyGPT(t, img)
			}
			a.assertNoLeaks(t)
		})
	}
}

// TestAccFaults: a failing provisioner, a cancel (Ctrl-C) in the middle of
// a provisioner, and a plugin killed with SIGKILL followed by a new build.
// After each, nothing of the build is left on the host.
func TestAccFaults(t *testing.T) {
	sleeper := `provisioner "shell" { inline = ["echo FACTORY-SLEEPING", "sleep 300"] }`

	t.Run("failing-provisioner", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
		res := a.Build(t, template(``, `provisioner "shell" { inline = ["echo about to fail", "exit 7"] }`),
			map[string]string{"base": disk.Path})
		if res.ExitCode == 0 {
			t.Fatalf("a failing provisioner built:\n%s", res.Output)
		}
		if !strings.Contains(res.Output, "exit status: 7") && !strings.Contains(res.Output, "exit status 7") {
			t.Errorf("the error does not name the exit status 7:\n%s", res.Output)
		}
		if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
			t.Errorf("output directory left after a failed build")
		}
		a.assertNoLeaks(t)
	})

	t.Run("cancel", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
		run := a.Start(t, template(``, sleeper), map[string]string{"base": disk.Path})
		run.WaitForOutput(t, "FACTORY-SLEEPING", 2*time.Minute)
		run.Interrupt(t, syscall.SIGINT)
		res := run.Wait()
		if res.ExitCode == 0 {
			t.Fatalf("a cancelled build succeeded:\n%s", res.Output)
		}
		if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
			t.Errorf("output directory left after a cancelled build")
		}
		a.assertNoLeaks(t)
	})

	t.Run("sigkill-then-new-build", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
		killed := killMidBuild(t, a, template(``, sleeper), map[string]string{"base": disk.Path, "out": "killed"})
		m := regexp.MustCompile(`Mounted the root filesystem at (\S+)`).FindStringSubmatch(killed)
		if m == nil {
			t.Fatalf("the killed build does not say where it mounted the root:\n%s", killed)
		}
		if _, err := os.Stat(m[1]); err != nil {
			t.Fatalf("the killed build's mount path: %v", err)
		}

		// The killed build really left its loop devices, mounts and the
		// process in the chroot behind; otherwise this test proves nothing.
		if leaks := a.before.LeftIn(a.OwnDirs()...); len(leaks) == 0 {
			t.Fatal("the killed build left nothing behind; the test cannot show the reaper works")
		}

		res := mustBuild(t, a, template(``, `provisioner "shell" { inline = ["true"] }`),
			map[string]string{"base": disk.Path})
		if !strings.Contains(res.Output, "Released what an earlier, killed build left behind") {
			t.Errorf("the new build did not report reaping the killed one:\n%s", res.Output)
		}
		if work, _ := filepath.Glob(filepath.Join(a.Dir, "killed", ".*.work.raw")); len(work) > 0 {
			t.Errorf("the killed build's working disk was not removed by the reaper: %v", work)
		}
		if _, err := os.Lstat(m[1]); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the killed build's mount path %s was not removed by the reaper (%v)", m[1], err)
		}
		a.assertNoLeaks(t)
	})
}

// killMidBuild starts a build whose provisioner prints FACTORY-SLEEPING
// and sleeps, then kills the plugin with SIGKILL once it sleeps, and
// returns the build's output.
func killMidBuild(t *testing.T, a *acc, tmpl string, vars map[string]string) string {
	t.Helper()
	run := a.Start(t, tmpl, vars)
	run.WaitForOutput(t, "FACTORY-SLEEPING", 2*time.Minute)
	pid := run.WaitForPlugin(t, 10*time.Second)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Packer itself may wait on the dead plugin's provisioner: end it
	// too, as a crashed CI runner would. The chroot's sleep survives.
	time.Sleep(time.Second)
	run.Interrupt(t, syscall.SIGKILL)
	return run.Wait().Output
}

// TestAccBadInputs: each bad base image gives one clear error naming the
// problem, leaves the base image untouched and no artifact.
func TestAccBadInputs(t *testing.T) {
	cases := []struct {
		name string
		base func(t *testing.T) string
		want string
	}{
		{"not-a-disk", func(t *testing.T) string { return fixture.NotADisk(t) }, "is not a disk image"},
		{"truncated-qcow2", func(t *testing.T) string { return fixture.TruncatedQCOW2(t) }, "qcow2 is damaged"},
		{"no-root", func(t *testing.T) string { return fixture.NoRoot(t) }, "no root filesystem found"},
		{"past-end", func(t *testing.T) string { return fixture.PastEnd(t) }, "past the end of the disk"},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nothing-here.img") }, "nothing-here.img"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newAcc(t)
			base := c.base(t)
			var sum string
			if _, err := os.Stat(base); err == nil {
				sum = fixture.Sha256(t, base)
			}
			res := a.Build(t, template(``, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": base})
			if res.ExitCode == 0 {
				t.Fatalf("a bad base image built:\n%s", res.Output)
			}
			if !strings.Contains(res.Output, c.want) {
				t.Errorf("the error does not say %q:\n%s", c.want, res.Output)
			}
			if strings.Contains(res.Output, base+": base image "+base) || strings.Contains(res.Output, base+": base_image "+base) {
				t.Errorf("the error names the base image twice:\n%s", res.Output)
			}
			if sum != "" && fixture.Sha256(t, base) != sum {
				t.Error("the base image changed")
			}
			if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
				t.Errorf("output directory left after a failed build")
			}
			a.assertNoLeaks(t)
		})
	}
}

// TestAccOptions exercises the amazon-chroot-style options in one build:
// host command hooks with their variables, command_wrapper, copy_files, an
// extra chroot mount, generated data in shell-local, a vfat /boot/efi from
// the image's fstab (mounted by a kernel with vfat, staged with mtools by
// one without: either way the provisioner's file reaches the ESP, with
// umask=0077's mode on the mount point, and fsck.fat finds it clean), and an fstab entry of a
// type no kernel mounts (fixture.NoFSType, on the ESP's device): skipped,
// and fatal when required.
func TestAccOptions(t *testing.T) {
	a := newAcc(t)
	vfat := fixture.KernelMountsVFAT(t)
	noFS := "UUID=" + fixture.ESPUUID + " /srv/nofs " + fixture.NoFSType + " defaults 0 2"
	disk := fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt", SeparateBoot: true, ESP: true,
		FstabExtra: []string{"UUID=" + fixture.ESPUUID + " /boot/efi vfat umask=0077 0 1", noFS}})
	esp, ok := disk.Find("/boot/efi")
	if !ok {
		t.Fatal("the fixture disk has no ESP")
	}
	hostDir := t.TempDir()
	copied := filepath.Join(hostDir, "copied.conf")
	if err := os.WriteFile(copied, []byte("copied from the host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := mustBuild(t, a, template(fmt.Sprintf(`
  pre_mount_commands   = ["echo pre {{.Device}} > %[1]s/pre", "test ! -e {{.MountPath}}/etc || echo mounted-too-early >> %[1]s/pre"]
  post_mount_commands  = ["test -f {{.MountPath}}/etc/fstab && test -f {{.DiskPath}} && echo post > %[1]s/post"]
  pre_unmount_commands = ["cp {{.MountPath}}/root/from-chroot %[1]s/pre-unmount"]
  command_wrapper      = "env WRAPPED=yes {{.Command}}"
  copy_files           = [%[2]q]
  chroot_mounts        = [["tmpfs", "tmpfs", "/mnt/scratch"]]
`, hostDir, copied), fmt.Sprintf(`
  provisioner "shell" {
    inline = [
      "echo $WRAPPED > /root/from-chroot",
      "echo scratch > /mnt/scratch/file",
      "cat %[1]s > /root/copied-seen",
      "echo from-build > /boot/efi/from-build.txt",
      "echo ESP-MODE-$(stat -c %%a /boot/efi)",
    ]
  }
  provisioner "shell-local" {
    inline = ["echo ${build.MountPath} ${build.Device} ${build.RootPartition} > %[2]s/generated"]
  }
`, copied, hostDir)), map[string]string{"base": disk.Path})

	img := filepath.Join(a.out(), "t.raw")
	root := disk.Root()
	host := func(name string) string {
		b, err := os.ReadFile(filepath.Join(hostDir, name))
		if err != nil {
			t.Errorf("host command did not run: %v", err)
		}
		return string(b)
	}
	if got := host("pre"); !strings.HasPrefix(got, "pre /dev/loop") || strings.Contains(got, "too-early") {
		t.Errorf("pre_mount_commands: %q", got)
	}
	if got := host("post"); got != "post\n" {
		t.Errorf("post_mount_commands: %q", got)
	}
	if got := host("pre-unmount"); got != "yes\n" {
		t.Errorf("pre_unmount_commands / command_wrapper in the chroot: %q", got)
	}
	if got := host("generated"); !strings.Contains(got, "/run/imagefactory/mnt/t-") || !strings.Contains(got, "/dev/loop") ||
		!strings.HasSuffix(strings.TrimSpace(got), fmt.Sprint(root.Number)) {
		t.Errorf("generated data in shell-local: %q", got)
	}
	if got := readOut(t, img, root, "/root/copied-seen"); got != "copied from the host\n" {
		t.Errorf("copy_files: %q", got)
	}
	if fixture.FileExistsOnDisk(t, img, root.Offset, "/mnt/scratch/file") {
		t.Error("a write to the tmpfs chroot mount landed in the image")
	}
	for _, want := range []string{"Mounted /boot/efi", "ESP-MODE-700", "Skipped /srv/nofs", "this kernel cannot mount " + fixture.NoFSType + " filesystems"} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("the output does not say %q:\n%s", want, res.Output)
		}
	}
	staged := strings.Contains(res.Output, "its files are staged in a tmpfs")
	if staged == vfat {
		t.Errorf("the vfat /boot/efi staged: %v, on a kernel where mount(2) of vfat works: %v:\n%s", staged, vfat, res.Output)
	}
	// Says which branch ran (internal/vfatguest asserts it on a vfat kernel).
	t.Logf("the vfat /boot/efi was %s (KernelMountsVFAT = %v)", map[bool]string{true: "staged in a tmpfs", false: "mounted by the kernel"}[staged], vfat)
	if got, ok := fixture.FATFile(t, img, esp, "/from-build.txt"); !ok || got != "from-build\n" {
		t.Errorf("/boot/efi/from-build.txt in the output's ESP = %q (found %v)", got, ok)
	}
	fixture.FsckPartition(t, img, esp)
	a.assertNoLeaks(t)

	t.Run("required-unmountable-fails", func(t *testing.T) {
		a := newAcc(t)
		res := a.Build(t, template("  required_mounts = [\"/srv/nofs\"]", `provisioner "shell" { inline = ["true"] }`),
			map[string]string{"base": disk.Path})
		want := "required mount point /srv/nofs (fstab line 5: " + noFS + ") cannot be mounted: this kernel cannot mount " + fixture.NoFSType
		if res.ExitCode == 0 || !strings.Contains(res.Output, want) {
			t.Errorf("a required mount that cannot be mounted must fail the build, saying %q; exit %d:\n%s", want, res.ExitCode, res.Output)
		}
		a.assertNoLeaks(t)
	})
}

// TestAccResolvConf checks the bind and keep modes (copy is checked by
// TestAccChrootProvisioners).
func TestAccResolvConf(t *testing.T) {
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	for _, mode := range []string{"bind", "keep"} {
		t.Run(mode, func(t *testing.T) {
			a := newAcc(t)
			disk := fixture.NewDisk(t, fixture.DiskOptions{})
			mustBuild(t, a, template(`  resolv_conf = "`+mode+`"`,
				`provisioner "shell" { inline = ["cat /etc/resolv.conf > /root/resolv-during-build"] }`),
				map[string]string{"base": disk.Path})
			img := filepath.Join(a.out(), "t.raw")
			during := readOut(t, img, disk.Root(), "/root/resolv-during-build")
			want := string(hostResolv)
			if mode == "keep" {
				want = readOut(t, disk.Path, disk.Root(), "/etc/resolv.conf")
			}
			if during != want {
				t.Errorf("resolv.conf during the build: got %q, want %q", during, want)
			}
			if got := readOut(t, img, disk.Root(), "/etc/resolv.conf"); !strings.Contains(got, fixture.ResolvConfMarker) {
				t.Errorf("the image's resolv.conf changed: %q", got)
			}
			a.assertNoLeaks(t)
		})
	}
}

// TestAccParallelBuilds runs two sources of one template at once (Packer
// builds them in parallel): both images right, nothing left. That they ran
// at once is shown by events, not by time: a shell-local provisioner of
// each build marks its arrival and waits for the other's (a barrier: two
// builds one after the other would never pass it, and would fail at its
// hang guard), then copies the state directory's journals, records the
// mount path and device it was given, and waits at a second barrier until
// the other has copied too, so both copies are made while both builds
// hold their disks.
// Each copy must hold both builds' journals, each build's loop devices and
// mounts must be its own (disjoint devices, mount points and backing
// files), and each build's mount path and device must be in its journal.
func TestAccParallelBuilds(t *testing.T) {
	a := newAcc(t)
	mbr := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
	gpt := fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt"})
	rv := t.TempDir() // the rendezvous: NAME.arrived, NAME.held, NAME/*.journal
	res := mustBuild(t, a, fmt.Sprintf(`
source "imagefactory" "one" {
  base_image       = %[1]q
  output_directory = "out-one"
}
source "imagefactory" "two" {
  base_image       = %[2]q
  output_directory = "out-two"
  format           = "qcow2"
}
build {
  sources = ["source.imagefactory.one", "source.imagefactory.two"]
  provisioner "shell" { inline = ["echo $PACKER_BUILD_NAME > /etc/factory-marker"] }
  provisioner "shell-local" {
    environment_vars = ["ME=${source.name}", "RV=%[3]s"]
    inline = [
      "set -e",
      "if [ \"$ME\" = one ]; then OTHER=two; else OTHER=one; fi",
      "wait_for() { n=0; until [ -e \"$RV/$OTHER.$1\" ]; do n=$((n+1)); [ $n -lt 3000 ] || { echo \"$ME: $OTHER never $1\"; exit 1; }; sleep 0.1; done; }",
      "touch \"$RV/$ME.arrived\"",
      "wait_for arrived",
      "mkdir \"$RV/$ME\"",
      "cp \"$IMAGEFACTORY_STATE_DIR\"/*.journal \"$RV/$ME/\"",
      "echo ${build.MountPath} ${build.Device} > \"$RV/$ME.held\"",
      "touch \"$RV/$ME.copied\"",
      "wait_for copied",
      "echo \"$ME: met $OTHER\"",
    ]
  }
}
`, mbr.Path, gpt.Path, rv), nil)
	if got := readOut(t, filepath.Join(a.Dir, "out-one", "one.raw"), mbr.Root(), "/etc/factory-marker"); got != "one\n" {
		t.Errorf("image one: marker %q", got)
	}
	two := toRaw(t, filepath.Join(a.Dir, "out-two", "two.qcow2"))
	if got := readOut(t, two, gpt.Root(), "/etc/factory-marker"); got != "two\n" {
		t.Errorf("image two: marker %q", got)
	}
	for _, want := range []string{"one: met two", "two: met one"} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("the output does not say %q:\n%s", want, res.Output)
		}
	}
	held := map[string][2]string{} // build -> mount path, device
	for _, b := range []string{"one", "two"} {
		raw, err := os.ReadFile(filepath.Join(rv, b+".held"))
		f := strings.Fields(string(raw))
		if err != nil || len(f) != 2 || !strings.HasPrefix(f[1], "/dev/loop") {
			t.Fatalf("build %s held %q (%v)", b, raw, err)
		}
		held[b] = [2]string{f[0], f[1]}
	}
	if held["one"][0] == held["two"][0] || held["one"][1] == held["two"][1] {
		t.Errorf("the builds shared a mount path or device: %v", held)
	}
	for _, copier := range []string{"one", "two"} {
		j := parallelJournals(t, filepath.Join(rv, copier))
		if len(j) != 2 {
			t.Fatalf("while build %s was at the barrier, the state directory held the journals of builds %v; want one and two", copier, slices.Collect(maps.Keys(j)))
		}
		seen := map[string]string{} // loop device or mount point -> build
		for b, took := range j {
			for _, what := range took {
				if other, ok := seen[what]; ok && other != b {
					t.Errorf("builds %s and %s both took %s", other, b, what)
				}
				seen[what] = b
				if strings.HasPrefix(what, "backing ") && !strings.Contains(what, "/out-"+b+"/") {
					t.Errorf("build %s's loop device is backed by %s", b, what)
				}
			}
			for _, h := range held[b] {
				if !slices.ContainsFunc(took, func(s string) bool { return strings.HasSuffix(s, " "+h) }) {
					t.Errorf("build %s's journal (copied by %s) does not hold %s, which it was given: %q", b, copier, h, took)
				}
			}
		}
	}
	a.assertNoLeaks(t)
}

// parallelJournals reads the journals copied into dir: for each build
// ("one", "two", from the journal's label), what it had taken and not
// released: "loop DEVICE", "backing FILE", "mount TARGET".
func parallelJournals(t *testing.T, dir string) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.journal"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var build string
		taken := map[uint64][]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			var r struct {
				Op, Label string
				ID        uint64
				Entry     *struct{ Kind, Path, Backing string }
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%s: %v: %q", f, err, line)
			}
			switch r.Op {
			case "header":
				if _, after, ok := strings.Cut(r.Label, `build "`); ok {
					build, _, _ = strings.Cut(after, `"`)
				}
			case "take":
				switch r.Entry.Kind {
				case "loop":
					taken[r.ID] = []string{"loop " + r.Entry.Path, "backing " + r.Entry.Backing}
				case "mount":
					taken[r.ID] = []string{"mount " + r.Entry.Path}
				}
			case "release":
				delete(taken, r.ID)
			}
		}
		if build == "" {
			continue // not a build's journal
		}
		if _, dup := out[build]; dup {
			t.Errorf("two journals of build %s", build)
		}
		out[build] = nil
		for _, w := range taken {
			out[build] = append(out[build], w...)
		}
	}
	return out
}
