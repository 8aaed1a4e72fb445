package session

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
)

// TestChrootPrivateDev: a session opened for a chroot has a private /dev
// holding the listed nodes and links, a fresh devpts, a /dev/shm tmpfs and
// a block node for each of its own loop devices, no other block device;
// the image's filesystems (root and /boot from its fstab) are nodev, so a
// node in the image with the host disk's number does not open. The
// control, a session without the chroot, opens that node: the check can
// fail.
func TestChrootPrivateDev(t *testing.T) {
	_, hostDisk := fixture.HostDisk(t)
	for _, chroot := range []bool{true, false} {
		t.Run(map[bool]string{true: "chroot", false: "control"}[chroot], func(t *testing.T) {
			e := newEnv(t, fixture.Disk(t, fixture.DiskOptions{Table: "gpt", SeparateBoot: true}))
			s, err := Open(context.Background(), e.opts, chroot)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			root := e.opts.MountPath
			// The host's root disk, and a device this machine lets the
			// test open (its device cgroup may refuse the host's disk
			// with EPERM whatever the mount says): the image's own loop.
			var loop unix.Stat_t
			if err := unix.Stat(s.Parts[0].Device, &loop); err != nil {
				t.Fatal(err)
			}
			for _, fs := range []string{"", "/boot"} {
				var sfs unix.Statfs_t
				if err := unix.Statfs(root+fs, &sfs); err != nil {
					t.Fatal(err)
				}
				if nodev := sfs.Flags&unix.ST_NODEV != 0; nodev != chroot {
					t.Errorf("%s: nodev %v, want %v", fs+"/", nodev, chroot)
				}
				for name, rdev := range map[string]uint64{"host-disk": hostDisk, "loop": loop.Rdev} {
					node := root + fs + "/hostile-" + name
					if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(rdev)); err != nil {
						t.Fatal(err)
					}
					f, err := os.Open(node)
					if f != nil {
						f.Close()
					}
					if chroot && !errors.Is(err, unix.EACCES) {
						t.Errorf("opening a node of the %s in the image's %s: %v, want EACCES (nodev)", name, fs+"/", err)
					}
					if !chroot && name == "loop" && err != nil {
						t.Errorf("control: the node of the %s in %s did not open without nodev: %v", name, fs+"/", err)
					}
				}
			}
			if !chroot {
				return
			}

			dev := filepath.Join(root, "dev")
			want := append([]string{"pts", "shm"}, sandbox.Dirs...)
			for _, n := range sandbox.CharDevices {
				want = append(want, n.Name)
			}
			for _, l := range sandbox.Links {
				want = append(want, l.Name)
			}
			var loops []string
			for _, p := range s.Parts {
				loops = append(loops, filepath.Base(p.Device))
				var host, ours unix.Stat_t
				if err := unix.Stat(p.Device, &host); err != nil {
					t.Fatal(err)
				}
				if err := unix.Lstat(filepath.Join(dev, filepath.Base(p.Device)), &ours); err != nil {
					t.Errorf("%s missing from the private /dev: %v", p.Device, err)
					continue
				}
				if ours.Mode != unix.S_IFBLK|0o660 || ours.Rdev != host.Rdev || ours.Gid != sandbox.DiskGID {
					t.Errorf("%s: mode %o rdev %x gid %d, want block 0660 %x gid %d", p.Device, ours.Mode, ours.Rdev, ours.Gid, host.Rdev, sandbox.DiskGID)
				}
			}
			if len(loops) != 2 {
				t.Errorf("the session holds %q, want two loop devices (boot and root)", loops)
			}
			want = append(want, loops...)
			var got []string
			entries, err := os.ReadDir(dev)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				got = append(got, e.Name())
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("the private /dev holds %q, want %q", got, want)
			}
			// The private /dev's nodes open (it is not nodev): a loop
			// device of the image is readable from the chroot.
			if f, err := os.Open(filepath.Join(dev, loops[0])); err != nil {
				t.Errorf("the image's loop device in the private /dev: %v", err)
			} else {
				f.Close()
			}
			for _, c := range []struct {
				path  string
				magic int64
				mode  os.FileMode
			}{
				{"dev", unix.TMPFS_MAGIC, os.ModeDir | 0o755},
				{"dev/shm", unix.TMPFS_MAGIC, os.ModeDir | os.ModeSticky | 0o777},
				{"dev/pts", unix.DEVPTS_SUPER_MAGIC, os.ModeDir | 0o755},
			} {
				var sfs unix.Statfs_t
				if err := unix.Statfs(filepath.Join(root, c.path), &sfs); err != nil || sfs.Type != c.magic {
					t.Errorf("/%s: filesystem %x (%v), want %x", c.path, sfs.Type, err, c.magic)
				}
				if fi, err := os.Stat(filepath.Join(root, c.path)); err != nil || fi.Mode() != c.mode {
					t.Errorf("/%s: mode %v (%v), want %v", c.path, fi.Mode(), err, c.mode)
				}
			}
			// A fresh devpts instance: not the host's.
			var ours, host unix.Stat_t
			if unix.Stat(filepath.Join(dev, "pts"), &ours) != nil || unix.Stat("/dev/pts", &host) != nil || ours.Dev == host.Dev {
				t.Error("/dev/pts in the chroot is the host's devpts instance")
			}
		})
	}
}
