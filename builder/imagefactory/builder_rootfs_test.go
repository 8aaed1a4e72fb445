package imagefactory

import (
	"context"
	"encoding/json"
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
			fstabBefore, _ := os.ReadFile(filepath.Join(tree, "etc/fstab"))
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
				fstab, _ := os.ReadFile(filepath.Join(mnt, "etc/fstab"))
				if !strings.Contains(string(fstab), "UUID=") || !strings.Contains(string(fstab), "\t/\t"+fs+"\t") {
					t.Errorf("fstab during provisioning:\n%s", fstab)
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
			if after, _ := os.ReadFile(filepath.Join(tree, "etc/fstab")); string(after) != string(fstabBefore) {
				t.Error("the source tree's fstab changed")
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
}

func (u *recordingUi) Say(msg string) {
	u.mu.Lock()
	u.text.WriteString(msg + "\n")
	u.mu.Unlock()
	u.Ui.Say(msg)
}

func (u *recordingUi) said() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.text.String()
}

// ext4Bytes is the size of an ext4 filesystem from its superblock.
func ext4Bytes(h map[string]int64) int64 { return h["Block count"] * h["Block size"] }
