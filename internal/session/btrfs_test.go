package session

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// subvolumesUnder maps the mount points under dir to the subvolume each
// mount shows (mountinfo's root field: "/root", "/@/home"), for btrfs
// mounts only.
func subvolumesUnder(t *testing.T, dir string) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || len(fields) < sep+2 || fields[sep+1] != "btrfs" {
			continue
		}
		if mp := fields[4]; mp == dir || strings.HasPrefix(mp, dir+"/") {
			rel := strings.TrimPrefix(mp, dir)
			if rel == "" {
				rel = "/"
			}
			out[rel] = fields[3]
		}
	}
	return out
}

// TestBtrfsRoot opens Fedora- and openSUSE-like disks: the root is found
// in its subvolume (named by fstab for Fedora, the default one for
// openSUSE), with root_partition too, and every fstab entry on the btrfs
// is mounted from its own subvolume.
func TestBtrfsRoot(t *testing.T) {
	requireRoot(t)
	for _, layout := range []string{fixture.Fedora, fixture.OpenSUSE} {
		disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: layout})
		btrfsPart := disk.Root()
		for _, byNumber := range []bool{false, true} {
			name := layout + "/found"
			if byNumber {
				name = layout + "/root_partition"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, disk.Path)
				if byNumber {
					e.opts.RootPartition = btrfsPart.Number
				}
				s := e.mountRoot(t)
				if s.Root.Number != btrfsPart.Number {
					t.Fatalf("root is %s, want partition %d", s.Root, btrfsPart.Number)
				}
				sub, why, ok := s.RootSubvolume()
				if !ok || sub.Path != disk.Subvolumes["/"] {
					t.Fatalf("root subvolume %v (%s), %v; want %s", sub, why, ok, disk.Subvolumes["/"])
				}
				t.Logf("root subvolume %s: %s", sub, why)
				if def := s.RootDefaultSubvolume(); def.Path != disk.Default {
					t.Errorf("default subvolume %v, want %q", def, disk.Default)
				}
				if !strings.Contains(s.Describe(), "subvolumes ") {
					t.Errorf("Describe does not list the subvolumes:\n%s", s.Describe())
				}
				mounted, skipped, err := s.MountFstab()
				if err != nil {
					t.Fatalf("MountFstab: %v", err)
				}
				t.Logf("mounted %v, skipped %v", mounted, skipped)
				got := subvolumesUnder(t, e.opts.MountPath)
				for mp, subvol := range disk.Subvolumes {
					if got[mp] != "/"+subvol {
						t.Errorf("%s shows subvolume %q, want /%s (all: %v)", mp, got[mp], subvol, got)
					}
				}
				for _, f := range []string{"/etc/fstab", "/bin/sh", "/home/" + fixture.HomeMarkerFile} {
					if _, err := s.RootFS().Lstat(f); err != nil {
						t.Errorf("%s: %v", f, err)
					}
				}
				if layout == fixture.OpenSUSE {
					if _, err := s.RootFS().Lstat("/var/" + fixture.VarMarkerFile); err != nil {
						t.Errorf("/var is not the @/var subvolume: %v", err)
					}
				}
				// The root mount compresses as the image's fstab says.
				if layout == fixture.Fedora && !strings.Contains(mountOptions(t, e.opts.MountPath), "compress=zstd:1") {
					t.Errorf("the root mount's options lack fstab's compress=zstd:1: %s", mountOptions(t, e.opts.MountPath))
				}
			})
		}
	}
}

// TestBtrfsMountOptionsOverride: subvol= in mount_options mounts that
// subvolume as the root instead of the one found, without fstab's
// compress= either.
func TestBtrfsMountOptionsOverride(t *testing.T) {
	requireRoot(t)
	disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: fixture.Fedora})
	e := newEnv(t, disk.Path)
	e.opts.MountOptions = []string{"subvol=home", "noatime"}
	s := e.mountRoot(t)
	if sub, why, _ := s.RootSubvolume(); sub.Path != "home" || why != "mount_options names it" {
		t.Errorf("root subvolume %v (%s), want home named by mount_options", sub, why)
	}
	if got := subvolumesUnder(t, e.opts.MountPath)["/"]; got != "/home" {
		t.Errorf("the root shows subvolume %q, want /home", got)
	}
	if opts := mountOptions(t, e.opts.MountPath); strings.Contains(opts, "compress") {
		t.Errorf("the root mount took fstab's compression anyway: %s", opts)
	}
}

// mountOptions is the super options of the mount at dir (mountinfo).
func mountOptions(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	opts := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == dir {
			opts = f[len(f)-1] // the last mount there is on top
		}
	}
	return opts
}

// TestBtrfsNoRoot: a btrfs whose subvolumes hold no /etc/fstab is not
// taken for the root, and the error describes it with its subvolumes; with
// root_partition, the default subvolume is mounted and the reason said.
func TestBtrfsNoRoot(t *testing.T) {
	requireRoot(t)
	disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: fixture.Fedora})
	p := disk.Root()
	fixture.WithSubvolume(t, disk.Path, p, "root", func(dir string) {
		if err := os.Remove(filepath.Join(dir, "etc/fstab")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("found", func(t *testing.T) {
		e := newEnv(t, disk.Path)
		s := e.attach(t)
		_, err := s.FindRoot(context.Background())
		if err == nil {
			t.Fatal("FindRoot found a root")
		}
		t.Log(err)
		for _, want := range []string{"no root filesystem found", `btrfs labelled "fedora"): `,
			"a btrfs filesystem; not usable as the root: no /etc/fstab at its top level, in its default subvolume or in any subvolume\n      subvolumes root, home"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
		}
	})
	t.Run("root_partition", func(t *testing.T) {
		e := newEnv(t, disk.Path)
		e.opts.RootPartition = p.Number
		s := e.attach(t)
		if _, err := s.FindRoot(context.Background()); err != nil {
			t.Fatal(err)
		}
		sub, why, _ := s.RootSubvolume()
		if sub.ID != 5 || !strings.Contains(why, "no subvolume holds /etc/fstab") {
			t.Errorf("root subvolume %v (%s); want the top level, saying why", sub, why)
		}
	})
}

// TestBtrfsSeveralFstabs: two subvolumes hold an /etc/fstab, neither
// mounts /, neither is the default subvolume: FindRoot refuses to guess
// and names them; subvolid= in mount_options then chooses.
func TestBtrfsSeveralFstabs(t *testing.T) {
	requireRoot(t)
	disk := fixture.BtrfsDisk(t, fixture.BtrfsOptions{Layout: fixture.Fedora})
	p := disk.Root()
	fixture.WithSubvolume(t, disk.Path, p, "", func(top string) {
		for _, sub := range []string{"root", "home"} {
			if err := os.MkdirAll(filepath.Join(top, sub, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(top, sub, "etc/fstab"), []byte("proc /proc proc defaults 0 0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	e := newEnv(t, disk.Path)
	_, err := e.attach(t).FindRoot(context.Background())
	if err == nil || !strings.Contains(err.Error(), "subvolumes root (ID 256), home (ID 257) hold /etc/fstab") ||
		!strings.Contains(err.Error(), `mount_options = ["subvolid=N"]`) {
		t.Fatalf("FindRoot: %v; want a refusal naming both subvolumes", err)
	}
	e2 := newEnv(t, disk.Path)
	e2.opts.MountOptions = []string{"subvolid=256"}
	if _, err := e2.attach(t).FindRoot(context.Background()); err != nil {
		t.Errorf("with subvolid=256: %v", err)
	}
}

// BenchmarkBtrfsSession times one chroot session on the Fedora-like
// layout: attach, find the root in its subvolume, mount the stack (root,
// /boot, /home, the chroot mounts), `chroot true`, tear down.
func BenchmarkBtrfsSession(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	disk := fixture.BtrfsDisk(b, fixture.BtrfsOptions{Layout: fixture.Fedora})
	dir := b.TempDir()
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j, err := cleanupOpen(filepath.Join(dir, "state"))
		if err != nil {
			b.Fatal(err)
		}
		mnt := filepath.Join(dir, "mnt")
		s, err := Open(ctx, Options{Disk: disk.Path, Journal: j, MountPath: mnt}, true)
		if err != nil {
			b.Fatal(err)
		}
		if out, err := exec.Command("chroot", mnt, "/bin/true").CombinedOutput(); err != nil {
			b.Fatalf("chroot true: %v: %s", err, out)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		if err := j.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func cleanupOpen(state string) (*cleanup.Journal, error) { return cleanup.Open(state, "bench") }
