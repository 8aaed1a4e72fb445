package imagefactory

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestRunFromTree runs the builder in-process on a small tree with a
// kernel given by path: the disk is made, mounted for provisioning with
// the builder's fstab and grub.cfg in place, and the tree is untouched.
func TestRunFromTree(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			tree := t.TempDir()
			fixture.BusyboxTree(t, tree)
			fstabBefore, err := os.ReadFile(filepath.Join(tree, "etc/fstab"))
			if err != nil {
				t.Fatal(err)
			}
			kernel := filepath.Join(t.TempDir(), "vmlinuz-test")
			os.WriteFile(kernel, []byte("a kernel"), 0o644)
			before := fixture.LeakSnapshot()
			b, dir := newBuilder(t, "", map[string]interface{}{"base_image": "", "source_rootfs": tree, "kernel": kernel, "root_fs": fs, "fstab_by": "uuid"})
			hook := &packersdk.MockHook{RunFunc: func(context.Context) error {
				mnt := filepath.Join(dir, "mnt")
				cfg, err := os.ReadFile(filepath.Join(mnt, "boot/grub/grub.cfg"))
				if err != nil || !strings.Contains(string(cfg), "linux /boot/vmlinuz-test root=UUID=") {
					t.Errorf("grub.cfg during provisioning: %v\n%s", err, cfg)
				}
				fstab, err := os.ReadFile(filepath.Join(mnt, "etc/fstab"))
				if err != nil || !strings.Contains(string(fstab), "UUID=") || !strings.Contains(string(fstab), "\t/\t"+fs+"\t") {
					t.Errorf("fstab during provisioning: %v\n%s", err, fstab)
				}
				if k, _ := os.ReadFile(filepath.Join(mnt, "boot/vmlinuz-test")); string(k) != "a kernel" {
					t.Errorf("kernel not copied: %q", k)
				}
				return nil
			}}
			art, err := b.Run(context.Background(), packersdk.TestUi(t), hook)
			if err != nil {
				t.Fatal(err)
			}
			if !hook.RunCalled {
				t.Fatal("provisioning did not run")
			}
			if _, err := os.Stat(art.Files()[0]); err != nil {
				t.Error(err)
			}
			if after, err := os.ReadFile(filepath.Join(tree, "etc/fstab")); err != nil || string(after) != string(fstabBefore) {
				t.Errorf("the source tree's fstab changed (%v)", err)
			}
			before.AssertNoLeaksIn(t, dir)
		})
	}
}

// TestRunBackingFile: use_backing_file makes the working disk a qcow2
// overlay on the base image (exported over FUSE, nothing copied), which
// becomes the artifact; the base stays as it was. With disk_size the
// overlay, its last partition and filesystem grow.
func TestRunBackingFile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		diskSize string
		want     int64 // virtual size of the artifact
	}{
		{"same size", "", fixture.DefaultDiskSize},
		{"disk_size", "384M", 384 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := fixture.NewDisk(t, fixture.DiskOptions{})
			base := fixture.QCOW2(t, disk.Path)
			sum := fixture.Sha256(t, base)
			extra := map[string]interface{}{"use_backing_file": true}
			if tc.diskSize != "" {
				extra["disk_size"] = tc.diskSize
			}
			b, dir := newBuilder(t, base, extra)
			hook := &packersdk.MockHook{RunFunc: func(context.Context) error {
				return os.WriteFile(filepath.Join(dir, "mnt", "etc", "chained"), []byte("yes\n"), 0o644)
			}}
			ui := &recordingUi{Ui: packersdk.TestUi(t)}
			art, err := b.Run(context.Background(), ui, hook)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(ui.said(), "nothing of the base is copied") {
				t.Errorf("the working disk was not an overlay:\n%s", ui.said())
			}
			out, err := exec.Command("qemu-img", "info", "--output=json", art.Files()[0]).Output()
			if err != nil {
				t.Fatal(err)
			}
			var info struct {
				Format      string `json:"format"`
				Backing     string `json:"full-backing-filename"`
				VirtualSize int64  `json:"virtual-size"`
			}
			json.Unmarshal(out, &info)
			if info.Format != "qcow2" || info.Backing != base || info.VirtualSize != tc.want {
				t.Errorf("artifact %s: want qcow2 on %s, %d bytes: %s", art.Files()[0], base, tc.want, out)
			}
			if fixture.Sha256(t, base) != sum {
				t.Error("the base image changed")
			}
			raw := filepath.Join(t.TempDir(), "flat.raw")
			if b, err := exec.Command("qemu-img", "convert", "-O", "raw", art.Files()[0], raw).CombinedOutput(); err != nil {
				t.Fatalf("%v %s", err, b)
			}
			root := disk.Root()
			if fs := ext4Bytes(fixture.Ext4Header(t, raw, root.Offset)); tc.diskSize != "" && fs < tc.want-root.Offset-(2<<20) {
				t.Errorf("the root filesystem has %d bytes: it did not grow with the disk to %d", fs, tc.want)
			}
			if got := string(fixture.ReadFileFromPartition(t, raw, root, "/etc/chained")); got != "yes\n" {
				t.Errorf("/etc/chained = %q", got)
			}
			fixture.E2fsck(t, raw, root.Offset)
			if left, _ := filepath.Glob(filepath.Join(dir, "out", ".*")); len(left) > 0 {
				t.Errorf("left: %v", left)
			}
		})
	}
}

// recordingUi keeps what the builder says.
type recordingUi struct {
	packersdk.Ui
	mu   sync.Mutex
	text strings.Builder
	errs strings.Builder
}

func (u *recordingUi) Say(msg string) {
	u.mu.Lock()
	u.text.WriteString(msg + "\n")
	u.mu.Unlock()
	u.Ui.Say(msg)
}

func (u *recordingUi) Error(msg string) {
	u.mu.Lock()
	u.errs.WriteString(msg + "\n")
	u.mu.Unlock()
	u.Ui.Error(msg)
}

func (u *recordingUi) errors() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.errs.String()
}

func (u *recordingUi) said() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.text.String()
}

// ext4Bytes is the size of an ext4 filesystem from its superblock.
func ext4Bytes(h map[string]int64) int64 { return h["Block count"] * h["Block size"] }

// TestRunFromFilesystemImage runs the builder in-process on bare ext4 and
// xfs filesystem images (no partition table, no kernel) with a kernel and
// its modules given by path: the new root is of the image's kind and keeps
// its UUID and label, the image's fstab is kept as it was (it names the
// root by UUID), the modules are copied in, and the image file is
// unchanged.
func TestRunFromFilesystemImage(t *testing.T) {
	const xenFstab = "# a Xen-era AMI\n/dev/xvda1 / ext3 defaults,noatime 1 1\n/dev/xvdb /mnt auto defaults 0 2\n"
	for _, tc := range []struct {
		name, fs  string
		fstab     string // the image's, "" for the fixture's (by UUID)
		unclean   bool
		wrap      func(t testing.TB, raw string) string             // the file given: a qcow2 or a compressed image
		wantFstab func(src fixture.Partition, before string) string // nil: unchanged
		said      string
	}{
		{name: "ext4", fs: "ext4", said: "Kept the image's /etc/fstab"},
		{name: "xfs", fs: "xfs", said: "Kept the image's /etc/fstab"},
		{name: "xfs in a qcow2", fs: "xfs", wrap: fixture.QCOW2, said: "is a qcow2 image: writing its content to a raw working copy"},
		{name: "ext4 compressed with zstd", fs: "ext4", wrap: func(t testing.TB, p string) string { return fixture.Compress(t, p, "zst") },
			said: "is a zstd-compressed file: writing its content to a raw working copy"},
		{name: "ext4 unclean, fstab by Xen device", fs: "ext4", unclean: true,
			fstab: xenFstab,
			wantFstab: func(src fixture.Partition, _ string) string {
				return strings.Replace(xenFstab, "/dev/xvda1 / ext3 defaults,noatime 1 1", "LABEL="+src.Label+"\t/\text4\tdefaults,noatime\t1\t1", 1)
			},
			said: "Changed the image's /etc/fstab, line 2 (/): device /dev/xvda1 -> LABEL=cloudimg-rootfs, type ext3 -> ext4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := tc.fs
			img := fixture.BareFSImage(t, fs, tc.fstab)
			src := img.Root()
			if tc.unclean {
				fixture.SetExtIncompat(t, img.Path, 0, 0x4) // needs_recovery
			}
			fstabBefore := string(fixture.ReadFileFromPartition(t, img.Path, src, "/etc/fstab"))
			given := img.Path
			if tc.wrap != nil {
				given = tc.wrap(t, img.Path)
			}
			sum := fixture.Sha256(t, given)
			wantFstab := fstabBefore
			if tc.wantFstab != nil {
				wantFstab = tc.wantFstab(src, fstabBefore)
			}
			kdir := t.TempDir()
			kernel := filepath.Join(kdir, "vmlinuz-9.9.9-test")
			os.WriteFile(kernel, []byte("a kernel"), 0o644)
			modules := filepath.Join(kdir, "modules")
			os.MkdirAll(filepath.Join(modules, "kernel"), 0o755)
			os.WriteFile(filepath.Join(modules, "modules.dep"), []byte("kernel/a.ko:\n"), 0o644)
			before := fixture.LeakSnapshot()
			b, dir := newBuilder(t, "", map[string]interface{}{"base_image": "", "source_rootfs": given,
				"kernel": kernel, "kernel_modules": modules, "disk_size": "600M"})
			hook := &packersdk.MockHook{RunFunc: func(context.Context) error {
				mnt := filepath.Join(dir, "mnt")
				if got, _ := os.ReadFile(filepath.Join(mnt, "etc/fstab")); string(got) != wantFstab {
					t.Errorf("fstab during provisioning:\n%s\nwant:\n%s", got, wantFstab)
				}
				cfg, _ := os.ReadFile(filepath.Join(mnt, "boot/grub/grub.cfg"))
				if !strings.Contains(string(cfg), "root=UUID="+src.UUID) {
					t.Errorf("grub.cfg does not boot the image's UUID %s:\n%s", src.UUID, cfg)
				}
				if dep, err := os.ReadFile(filepath.Join(mnt, "lib/modules/9.9.9-test/modules.dep")); string(dep) != "kernel/a.ko:\n" {
					t.Errorf("modules not copied: %q %v", dep, err)
				}
				return os.WriteFile(filepath.Join(mnt, "etc/provisioned"), []byte("yes\n"), 0o644)
			}}
			ui := &recordingUi{Ui: packersdk.TestUi(t)}
			art, err := b.Run(context.Background(), ui, hook)
			if err != nil {
				t.Fatal(err)
			}
			if !hook.RunCalled {
				t.Fatal("provisioning did not run")
			}
			out := art.Files()[0]
			tab, err := fixture.ReadTable(t, out)
			if err != nil {
				t.Fatal(err)
			}
			ps, ss := tab.PartitionTable.Partitions, tab.PartitionTable.SectorSize
			root := fixture.Partition{Offset: ps[len(ps)-1].Start * ss, Size: ps[len(ps)-1].Size * ss, FS: fs}
			blk, _ := exec.Command("blkid", "-p", "-O", fmt.Sprint(root.Offset), "-o", "export", out).CombinedOutput()
			for _, want := range []string{"TYPE=" + fs, "UUID=" + src.UUID, "LABEL=" + src.Label} {
				if !strings.Contains(string(blk), want+"\n") {
					t.Errorf("output root: want %s:\n%s", want, blk)
				}
			}
			if got := string(fixture.ReadFileFromPartition(t, out, root, "/etc/provisioned")); got != "yes\n" {
				t.Errorf("/etc/provisioned = %q", got)
			}
			fixture.FsckPartition(t, out, root)
			if fixture.Sha256(t, given) != sum {
				t.Error("the filesystem image changed")
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "out", ".*")); len(left) > 0 {
				t.Errorf("working files left: %v", left)
			}
			if !strings.Contains(ui.said(), tc.said) {
				t.Errorf("the build did not say %q:\n%s", tc.said, ui.said())
			}
			if warned := strings.Contains(ui.errors(), "was not cleanly unmounted"); warned != tc.unclean {
				t.Errorf("warned of an unclean journal: %v, want %v:\n%s", warned, tc.unclean, ui.errors())
			}
			// The Xen fstab's ephemeral disk has no nofail.
			if warned := strings.Contains(ui.errors(), "line 3 mounts /dev/xvdb on /mnt without nofail"); warned != (tc.fstab != "") {
				t.Errorf("warned of /dev/xvdb: %v, want %v:\n%s", warned, tc.fstab != "", ui.errors())
			}
			before.AssertNoLeaksIn(t, dir, filepath.Dir(img.Path), filepath.Dir(given))
		})
	}
}
