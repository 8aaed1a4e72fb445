package fsimage

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

const testUUID = "5b0b8f3c-4f5e-4a53-9d1a-3c9e2f0a7b11"

// mkfs makes a filesystem image file of mib MiB with mkfs.TYPE and args.
func mkfs(t *testing.T, fstype string, mib int64, args ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), fstype+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(mib << 20)
	f.Close()
	args = append(args, img)
	if out, err := exec.Command("mkfs."+fstype, args...).CombinedOutput(); err != nil {
		t.Skipf("mkfs.%s: %v %s", fstype, err, out)
	}
	return img
}

// patchXFS sets bits of a big-endian 32-bit field of an xfs superblock
// (Probe reads it without checking its CRC).
func patchXFS(t *testing.T, img string, off int64, v uint32) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 4)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(b, binary.BigEndian.Uint32(b)|v)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, img string, off int64, data string) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Size() < 1<<20 {
		f.Truncate(1 << 20)
	}
	if _, err := f.WriteAt([]byte(data), off); err != nil {
		t.Fatal(err)
	}
}

func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		make    func(t *testing.T) string
		want    Info
		wantErr string
	}{
		{"ext2", func(t *testing.T) string { return mkfs(t, "ext2", 8, "-q", "-L", "old-root", "-U", testUUID) },
			Info{Type: Ext2, UUID: testUUID, Label: "old-root", Size: 8 << 20}, ""},
		{"ext3", func(t *testing.T) string { return mkfs(t, "ext3", 8, "-q", "-U", testUUID) },
			Info{Type: Ext3, UUID: testUUID, Size: 8 << 20}, ""},
		{"ext4 labelled as cloud images are", func(t *testing.T) string {
			return mkfs(t, "ext4", 16, "-q", "-L", "cloudimg-rootfs", "-U", testUUID)
		}, Info{Type: Ext4, UUID: testUUID, Label: "cloudimg-rootfs", Size: 16 << 20}, ""},
		{"ext4 with a 64bit, metadata_csum_seed", func(t *testing.T) string {
			return mkfs(t, "ext4", 16, "-q", "-O", "64bit,metadata_csum_seed", "-U", testUUID)
		}, Info{Type: Ext4, UUID: testUUID, Size: 16 << 20}, ""},
		{"ext4 not cleanly unmounted", func(t *testing.T) string {
			img := mkfs(t, "ext4", 16, "-q", "-U", testUUID)
			fixture.SetExtIncompat(t, img, 0, extIncompatRecover)
			return img
		}, Info{Type: Ext4, UUID: testUUID, Size: 16 << 20, Unclean: true}, ""},
		{"xfs", func(t *testing.T) string {
			return mkfs(t, "xfs", 300, "-q", "-L", "img-rootfs", "-m", "uuid="+testUUID)
		},
			Info{Type: XFS, UUID: testUUID, Label: "img-rootfs", Size: 300 << 20}, ""},
		{"ext4 with an unknown incompatible feature", func(t *testing.T) string {
			img := mkfs(t, "ext4", 16, "-q")
			fixture.SetExtIncompat(t, img, 0, 1<<30)
			return img
		}, Info{}, "unsupported filesystem features: ext incompatible features unknown 0x40000000, which Linux cannot mount"},
		{"ext4 dirdata (Lustre)", func(t *testing.T) string {
			img := mkfs(t, "ext4", 16, "-q")
			fixture.SetExtIncompat(t, img, 0, extIncompatDirData)
			return img
		}, Info{}, "ext incompatible features dirdata"},
		{"ext journal device", func(t *testing.T) string { return mkfs(t, "ext4", 8, "-q", "-O", "journal_dev") },
			Info{}, "it is an ext journal device (journal_dev), not a filesystem"},
		{"xfs needsrepair", func(t *testing.T) string {
			img := mkfs(t, "xfs", 300, "-q")
			patchXFS(t, img, xfsOffIncompat, xfsNeedsRepair)
			return img
		}, Info{}, "marked needsrepair: run xfs_repair on a copy"},
		{"xfs unknown incompatible feature", func(t *testing.T) string {
			img := mkfs(t, "xfs", 300, "-q")
			patchXFS(t, img, xfsOffIncompat, 1<<20)
			return img
		}, Info{}, "xfs incompatible features unknown 0x100000"},
		{"cut short", func(t *testing.T) string {
			img := mkfs(t, "ext4", 16, "-q")
			os.Truncate(img, 8<<20)
			return img
		}, Info{}, "the ext4 filesystem spans 16777216 bytes but the file has 8388608: it was cut short"},
		{"zeros", func(t *testing.T) string { p := filepath.Join(t.TempDir(), "z"); writeAt(t, p, 0, ""); return p },
			Info{}, "not an ext2/3/4 or xfs filesystem image"},
		{"MBR disk", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "d")
			writeAt(t, p, 446+4, "\x83")
			writeAt(t, p, 446+12, "\x00\x08")
			writeAt(t, p, 510, "\x55\xaa")
			return p
		}, Info{}, "it holds a whole disk with an MBR partition table"},
		{"GPT disk", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "d")
			writeAt(t, p, 512, "EFI PART")
			return p
		},
			Info{}, "it holds a whole disk with a GPT partition table"},
		{"btrfs", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "d")
			writeAt(t, p, 0x10040, "_BHRfS_M")
			return p
		},
			Info{}, "it holds a btrfs filesystem"},
		{"qcow2", func(t *testing.T) string { p := filepath.Join(t.TempDir(), "d"); writeAt(t, p, 0, "QFI\xfb"); return p },
			Info{}, "it holds a qcow2 disk image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Probe(tc.make(t))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Probe: %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Probe = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestMountReadOnly mounts ext4 (with a journal flagged for recovery, which
// a plain read-only mount would replay) and xfs images: the files are
// there, nothing can be written, the image file is unchanged and nothing
// is left behind.
func TestMountReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("ami\n"), 0o644)
	for _, tc := range []struct {
		name string
		make func(t *testing.T) string
	}{
		{"ext4 unclean", func(t *testing.T) string {
			img := mkfs(t, "ext4", 16, "-q", "-d", tree)
			fixture.SetExtIncompat(t, img, 0, extIncompatRecover)
			return img
		}},
		{"ext2", func(t *testing.T) string { return mkfs(t, "ext2", 16, "-q", "-d", tree) }},
		{"xfs", func(t *testing.T) string {
			img := mkfs(t, "xfs", 300, "-q")
			dir := t.TempDir()
			if err := unix.Mount(attach(t, img), dir, "xfs", 0, ""); err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
			os.WriteFile(filepath.Join(dir, "etc/hostname"), []byte("ami\n"), 0o644)
			if err := unix.Unmount(dir, 0); err != nil {
				t.Fatal(err)
			}
			return img
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.make(t)
			snap := fixture.LeakSnapshot()
			sum := fixture.Sha256(t, img)
			info, err := Probe(img)
			if err != nil {
				t.Fatal(err)
			}
			j, err := cleanup.Open(t.TempDir(), t.Name())
			if err != nil {
				t.Fatal(err)
			}
			work := t.TempDir()
			m, err := Mount(j, img, info, filepath.Join(work, "src"))
			if err != nil {
				j.Close()
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(m.Dir, "etc/hostname")); string(b) != "ami\n" {
				t.Errorf("etc/hostname through the mount: %q %v", b, err)
			}
			if err := os.WriteFile(filepath.Join(m.Dir, "etc/new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
				t.Errorf("writing into the mounted image: %v, want EROFS", err)
			}
			if err := m.Close(); err != nil {
				t.Error(err)
			}
			if err := j.Close(); err != nil {
				t.Error(err)
			}
			if _, err := os.Stat(m.Dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("mount point left: %v", err)
			}
			if fixture.Sha256(t, img) != sum {
				t.Errorf("the image file changed")
			}
			snap.AssertNoLeaksIn(t, filepath.Dir(img), work)
		})
	}
}

// attach binds img read-write for the test's own setup, detached at the end.
func attach(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestContainer: qcow2 and compressed filesystem images are containers,
// and their content comes out whole; a bare image, a compressed tarball
// and a compressed file of anything else are not.
func TestContainer(t *testing.T) {
	ext4 := mkfs(t, "ext4", 16, "-q", "-U", testUUID)
	tarball := filepath.Join(t.TempDir(), "root.tar")
	if out, err := exec.Command("tar", "-C", filepath.Dir(ext4), "-cf", tarball, filepath.Base(ext4)).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	writeAt(t, junk, 0, "nothing")
	for _, tc := range []struct {
		name, path, want string
	}{
		{"bare ext4", ext4, ""},
		{"qcow2", fixture.QCOW2(t, ext4), "a qcow2 image"},
		{"zstd", fixture.Compress(t, ext4, "zst"), "a zstd-compressed file"},
		{"gzip", fixture.Compress(t, ext4, "gz"), "a gzip-compressed file"},
		{"xz", fixture.Compress(t, ext4, "xz"), "an xz-compressed file"},
		{"compressed tarball", fixture.Compress(t, tarball, "gz"), ""},
		{"compressed junk", fixture.Compress(t, junk, "zst"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Container(tc.path)
			if err != nil || got != tc.want {
				t.Fatalf("Container = %q, %v; want %q", got, err, tc.want)
			}
			if got == "" {
				return
			}
			sum := fixture.Sha256(t, tc.path)
			dst := filepath.Join(t.TempDir(), "content.raw")
			if err := Unwrap(context.Background(), tc.path, dst); err != nil {
				t.Fatal(err)
			}
			if fixture.Sha256(t, dst) != fixture.Sha256(t, ext4) {
				t.Error("the unwrapped content differs from the image")
			}
			if info, err := Probe(dst); err != nil || info.UUID != testUUID {
				t.Errorf("Probe of the content: %+v, %v", info, err)
			}
			if fixture.Sha256(t, tc.path) != sum {
				t.Error("Unwrap changed its input")
			}
		})
	}
}
