package imagefactory_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// btrfsWrites are the files the provisioner writes, by mount point: each
// must land in that mount point's filesystem or subvolume.
var btrfsWrites = map[string]map[string]string{
	fixture.Fedora:   {"/": "factory-root", "/home": "factory-home", "/boot": "factory-boot"},
	fixture.OpenSUSE: {"/": "factory-root", "/home": "factory-home", "/var": "factory-var", "/.snapshots": "factory-snapshots"},
}

// btrfsProvisioner writes into every mounted filesystem, a compressible
// file, and a machine-id for the scrub to take out.
func btrfsProvisioner(layout string) string {
	var lines []string
	for mp, name := range btrfsWrites[layout] {
		lines = append(lines, fmt.Sprintf(`"echo %s > %s"`, name, filepath.Join(mp, name)))
	}
	slices.Sort(lines)
	lines = append(lines,
		`"yes imagefactory-compressible | head -c 4194304 > /root/compressible"`,
		`"echo 0123456789abcdef0123456789abcdef > /etc/machine-id"`,
		`"sync"`)
	return `  provisioner "shell" { inline = [` + strings.Join(lines, ", ") + `] }`
}

// ownMountPath puts a build's mounts under the harness's directory, so
// that assertNoLeaksOwn can tell them from other builds on the machine.
func (a *acc) ownMountPath() string {
	return fmt.Sprintf("  mount_path = %q\n", filepath.Join(a.Base, "mnt"))
}

// assertNoLeaksOwn is assertNoLeaks for builds with ownMountPath: only
// loop devices, mounts and processes tied to the harness's directory
// count, and the journals (assertNoLeaksHere).
func (a *acc) assertNoLeaksOwn(t *testing.T) {
	t.Helper()
	a.assertNoLeaksHere(t)
}

// TestAccBtrfs builds on the Fedora- and openSUSE-like btrfs disks with
// disk_size growth, a shell provisioner that writes into every mounted
// filesystem, then the scrub and sparsify post-processors; and inspects
// the output with btrfs-progs and read-only mounts of each subvolume.
func TestAccBtrfs(t *testing.T) {
	for _, layout := range []string{fixture.Fedora, fixture.OpenSUSE} {
		t.Run(layout, func(t *testing.T) {
			a := newAcc(t)
			disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: layout, Tree: debianTree})
			baseSum := fixture.Sha256(t, disk.Path)
			newSize := disk.Size + 256<<20
			res := mustBuild(t, a, template(a.ownMountPath()+fmt.Sprintf("  disk_size = \"%d\"", newSize), btrfsProvisioner(layout)+`
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {}
  }
`), map[string]string{"base": disk.Path})
			for _, l := range strings.Split(res.Output, "\n") {
				if regexp.MustCompile(`: (Root |Mounted |Skipped |Grew )`).MatchString(l) {
					t.Log(l)
				}
			}
			for _, want := range []string{"Root subvolume: " + disk.Subvolumes["/"], "subvolume"} {
				if !strings.Contains(res.Output, want) {
					t.Errorf("the build did not say %q:\n%s", want, res.Output)
				}
			}
			if !regexp.MustCompile(`  partition \d+ \(btrfs\): trimmed [0-9.]+ [KMG]?i?B of free space`).MatchString(res.Output) {
				t.Errorf("sparsify did not trim the btrfs:\n%s", res.Output)
			}
			if got := fixture.Sha256(t, disk.Path); got != baseSum {
				t.Errorf("the base image changed")
			}

			img := filepath.Join(a.out(), "t.raw")
			if got := fixture.FileSize(t, img); got != newSize {
				t.Fatalf("artifact size %d, want %d", got, newSize)
			}
			verifyGPT(t, img)
			root := disk.Root()
			oldSize := root.Size
			root.Size = grownSize(t, img, root)
			if root.Size <= oldSize {
				t.Fatalf("the btrfs partition did not grow: %d bytes", root.Size)
			}
			fixture.FsckPartition(t, img, root)
			inspectBtrfs(t, img, root, disk, oldSize)
			if layout == fixture.Fedora {
				boot, _ := disk.Find("/boot")
				if got := readOut(t, img, boot, "/factory-boot"); got != "factory-boot\n" {
					t.Errorf("/boot/factory-boot in the boot partition = %q", got)
				}
				fixture.FsckPartition(t, img, boot)
			}
			a.assertNoLeaksOwn(t)
		})
	}
}

// inspectBtrfs checks the output's btrfs from its top level and from a
// read-only mount of each subvolume.
func inspectBtrfs(t *testing.T, img string, p fixture.Partition, disk fixture.BtrfsDiskInfo, oldSize int64) {
	t.Helper()
	fixture.WithReadOnlySubvolume(t, img, p, "", func(top string) {
		// Grown to the partition, rounded down to the 4 KiB sector size.
		usage := fixture.Btrfs(t, "filesystem", "usage", "-b", top)
		m := regexp.MustCompile(`Device size:\s+(\d+)`).FindStringSubmatch(usage)
		if m == nil {
			t.Fatalf("no device size in btrfs filesystem usage:\n%s", usage)
		}
		if size, _ := strconv.ParseInt(m[1], 10, 64); size != p.Size/4096*4096 {
			t.Errorf("the btrfs is %d bytes, want the grown partition's %d rounded down to 4 KiB (it was %d)", size, p.Size, oldSize)
		}
		// Subvolumes, the default subvolume, the snapshot and the
		// compression property as they were.
		list := fixture.Btrfs(t, "subvolume", "list", top)
		want := []string{}
		for _, s := range disk.Subvolumes {
			want = append(want, s)
		}
		if disk.Snapshot != "" {
			want = append(want, disk.Snapshot)
		}
		for _, s := range want {
			if !strings.Contains(list, " path "+s+"\n") {
				t.Errorf("subvolume %s is gone:\n%s", s, list)
			}
		}
		def := fixture.Btrfs(t, "subvolume", "get-default", top)
		if disk.Default == "" && !strings.HasPrefix(def, "ID 5 ") || disk.Default != "" && !strings.HasSuffix(strings.TrimSpace(def), " path "+disk.Default) {
			t.Errorf("default subvolume is %q, want %q", def, disk.Default)
		}
		if got := fixture.Btrfs(t, "property", "get", filepath.Join(top, disk.Compressed), "compression"); strings.TrimSpace(got) != "compression=zstd" {
			t.Errorf("compression property of %s: %q, want compression=zstd", disk.Compressed, got)
		}
		if disk.Snapshot != "" {
			snap := filepath.Join(top, disk.Snapshot)
			if got := fixture.Btrfs(t, "property", "get", snap, "ro"); strings.TrimSpace(got) != "ro=true" {
				t.Errorf("snapshot %s: %q, want ro=true", disk.Snapshot, got)
			}
			if _, err := os.Lstat(filepath.Join(snap, "factory-root")); err == nil {
				t.Errorf("the build wrote into the read-only snapshot %s", disk.Snapshot)
			}
		}
		// Every file in its own subvolume, and only there.
		for mp, name := range btrfsWrites[disk.Layout] {
			sub, ok := disk.Subvolumes[mp]
			if !ok {
				continue // another filesystem
			}
			if got, err := os.ReadFile(filepath.Join(top, sub, name)); err != nil || string(got) != name+"\n" {
				t.Errorf("%s/%s in subvolume %s: %q, %v", mp, name, sub, got, err)
			}
			if mp != "/" {
				// The root subvolume's mount point directory stayed empty.
				rootSub := filepath.Join(top, disk.Subvolumes["/"])
				if _, err := os.Lstat(filepath.Join(rootSub, mp, name)); err == nil {
					t.Errorf("%s landed in the root subvolume's %s directory, not in subvolume %s", name, mp, sub)
				}
			}
		}
	})
	fixture.WithReadOnlySubvolume(t, img, p, disk.Subvolumes["/"], func(root string) {
		// The scrub ran on the root subvolume.
		if got, _ := os.ReadFile(filepath.Join(root, "etc/machine-id")); string(got) != "uninitialized\n" {
			t.Errorf("/etc/machine-id = %q after the scrub, want \"uninitialized\\n\"", got)
		}
		// Compressed as fstab's compress=zstd:1 (Fedora) or the property
		// (openSUSE's /home has it; / has neither there).
		out, err := exec.Command("filefrag", "-v", filepath.Join(root, "root/compressible")).CombinedOutput()
		encoded := strings.Contains(string(out), "encoded")
		if err != nil || encoded != (disk.Layout == fixture.Fedora) {
			t.Errorf("/root/compressible compressed = %v, want %v (filefrag: %v)\n%s", encoded, disk.Layout == fixture.Fedora, err, out)
		}
	})
}

// TestAccBtrfsRootPartition: root_partition naming the btrfs finds the
// root's subvolume as the search does (the issue: it mounted the top level
// without a word, and Packer's script upload failed minutes later), with
// mount_options' noatime added to it.
func TestAccBtrfsRootPartition(t *testing.T) {
	a := newAcc(t)
	disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: fixture.Fedora})
	root := disk.Root()
	// noatime: mount_options as fstab spells them (a flag, not data).
	res := mustBuild(t, a, template(a.ownMountPath()+fmt.Sprintf("  root_partition = %d\n  mount_options = [\"noatime\"]", root.Number),
		`provisioner "shell" { inline = ["echo factory-root > /factory-root"] }`), map[string]string{"base": disk.Path})
	if !strings.Contains(res.Output, "Root subvolume: root (ID 256)") {
		t.Errorf("the build did not name the root subvolume:\n%s", res.Output)
	}
	fixture.WithReadOnlySubvolume(t, filepath.Join(a.out(), "t.raw"), root, "root", func(dir string) {
		if got, err := os.ReadFile(filepath.Join(dir, "factory-root")); err != nil || string(got) != "factory-root\n" {
			t.Errorf("/factory-root in subvolume root: %q, %v", got, err)
		}
	})
	a.assertNoLeaksOwn(t)
}

// TestAccBtrfsFaults: on the Fedora-like layout, a failing provisioner,
// and a plugin killed with SIGKILL followed by a new build, leave no loop
// device, mount or journal behind.
func TestAccBtrfsFaults(t *testing.T) {
	t.Run("failing-provisioner", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: fixture.Fedora})
		res := a.Build(t, template(a.ownMountPath(), `provisioner "shell" { inline = ["echo factory > /home/f", "exit 7"] }`),
			map[string]string{"base": disk.Path})
		if res.ExitCode == 0 {
			t.Fatalf("a failing provisioner built:\n%s", res.Output)
		}
		if !strings.Contains(res.Output, "exit status: 7") && !strings.Contains(res.Output, "exit status 7") {
			t.Errorf("the error does not name the exit status 7:\n%s", res.Output)
		}
		a.assertNoLeaksOwn(t)
	})
	t.Run("sigkill-then-new-build", func(t *testing.T) {
		a := newAcc(t)
		disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: fixture.Fedora})
		killMidBuild(t, a, template(a.ownMountPath(), `provisioner "shell" { inline = ["echo FACTORY-SLEEPING", "sleep 300"] }`),
			map[string]string{"base": disk.Path, "out": "killed"})
		leaks := a.before.LeftIn(a.OwnDirs()...)
		btrfsLeft := false
		for _, l := range leaks {
			btrfsLeft = btrfsLeft || strings.Contains(l, "type btrfs")
		}
		if !btrfsLeft {
			t.Fatalf("the killed build left no btrfs mount behind; the test cannot show the reaper works:\n%s", strings.Join(leaks, "\n"))
		}
		res := mustBuild(t, a, template(a.ownMountPath(), `provisioner "shell" { inline = ["true"] }`),
			map[string]string{"base": disk.Path})
		if !strings.Contains(res.Output, "Released what an earlier, killed build left behind") {
			t.Errorf("the new build did not report reaping the killed one:\n%s", res.Output)
		}
		a.assertNoLeaksOwn(t)
	})
}

// TestAccBtrfsQemuBoot boots the Fedora-like layout, holding a bootable
// Debian 12 tree, with the qemu strategy: the image's kernel and initrd
// mount the root from subvolume root (the default boot_cmdline's
// rootflags), systemd mounts /home from subvolume home and /boot from the
// ext4, sshd lets the provisioner in; the output holds what it wrote,
// each file in its own subvolume or filesystem.
func TestAccBtrfsQemuBoot(t *testing.T) {
	requireQemu(t)
	t.Parallel() // boots under TCG (one core): two such tests run at once, after the sequential ones
	a := newAcc(t)
	disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: fixture.Fedora, Size: 3 << 30, Debian: true})
	res := mustBuild(t, a, template(qemuSource, `
  provisioner "shell" {
    inline = [
      "test \"$(cat /proc/1/comm)\" = systemd",
      "findmnt -no FSROOT / > /root/factory-fsroot",
      "findmnt -no FSROOT /home > /home/factory-home",
      "echo factory-boot > /boot/factory-boot",
    ]
  }
`), map[string]string{"base": disk.Path})
	console, err := os.ReadFile(filepath.Join(a.out(), "console.log"))
	if err != nil || !regexp.MustCompile(`Command line: .*rootflags=subvolid=256`).Match(console) {
		t.Errorf("the guest's kernel command line does not name the root subvolume (%v):\n%.3000s\n%s", err, console, res.Output)
	}
	img := filepath.Join(a.out(), "t.raw")
	root := disk.Root()
	fixture.WithReadOnlySubvolume(t, img, root, "", func(top string) {
		for path, want := range map[string]string{"root/root/factory-fsroot": "/root\n", "home/factory-home": "/home\n"} {
			if got, err := os.ReadFile(filepath.Join(top, path)); err != nil || string(got) != want {
				t.Errorf("%s: %q, %v; want %q (the guest's mount of that subvolume)", path, got, err, want)
			}
		}
	})
	boot, _ := disk.Find("/boot")
	if got := readOut(t, img, boot, "/factory-boot"); got != "factory-boot\n" {
		t.Errorf("/factory-boot in the boot partition = %q", got)
	}
	fixture.FsckPartition(t, img, root)
	assertNoQemuLeaks(t, a)
}
