package session

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("session tests attach loop devices and mount filesystems: run them as root")
	}
}

// env is one test's journal, mount path and leak check.
type env struct {
	opts Options
	dir  string // holds the journal's state dir and the mount path
}

// newEnv opens a journal in t.TempDir() and, at cleanup, closes it and
// checks that nothing is left under the test's directories: loop devices
// on disk, mounts, processes, the journal file.
func newEnv(t *testing.T, disk string) *env {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	before := fixture.LeakSnapshot()
	state := filepath.Join(dir, "state")
	j, err := cleanup.Open(state, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Errorf("journal close: %v", err)
		}
		before.AssertNoLeaksIn(t, dir, filepath.Dir(disk))
		if left, _ := filepath.Glob(filepath.Join(state, "*")); len(left) > 0 {
			t.Errorf("journal files left: %v", left)
		}
	})
	return &env{dir: dir, opts: Options{
		Disk:      disk,
		Journal:   j,
		MountPath: filepath.Join(dir, "mnt", "root"),
	}}
}

// attach is Attach that closes the session at cleanup.
func (e *env) attach(t *testing.T) *Session {
	t.Helper()
	s, err := Attach(context.Background(), e.opts)
	if err != nil {
		t.Fatalf("Attach %s: %v", e.opts.Disk, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// mountRoot attaches, finds and mounts the root.
func (e *env) mountRoot(t *testing.T) *Session {
	t.Helper()
	s := e.attach(t)
	if _, err := s.FindRoot(context.Background()); err != nil {
		t.Fatalf("FindRoot: %v", err)
	}
	if err := s.MountRoot(); err != nil {
		t.Fatalf("MountRoot: %v", err)
	}
	return s
}

// mountPoints lists the mount points under dir, from mountinfo.
func mountPoints(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, strings.TrimPrefix(fields[4], dir))
		}
	}
	return out
}

func TestAttachFindRoot(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name      string
		disk      fixture.DiskOptions
		opts      func(o *Options)
		wantParts int
		wantRoot  string // mount point in the fixture of the partition chosen
		wantKind  string
	}{
		{name: "mbr, by label", disk: fixture.DiskOptions{}, wantParts: 1, wantRoot: "/", wantKind: partition.MBR},
		{name: "gpt with /boot, by label", disk: fixture.DiskOptions{Table: "gpt", SeparateBoot: true}, wantParts: 2, wantRoot: "/", wantKind: partition.GPT},
		{name: "no table, by label", disk: fixture.DiskOptions{Table: "none"}, wantParts: 1, wantRoot: "/", wantKind: partition.None},
		{
			name:      "own root label",
			disk:      fixture.DiskOptions{SeparateBoot: true, RootLabel: "my-root"},
			opts:      func(o *Options) { o.RootLabels = []string{"nope", "my-root"} },
			wantParts: 2, wantRoot: "/", wantKind: partition.MBR,
		},
		{
			name:      "mbr with /boot, by /etc/fstab",
			disk:      fixture.DiskOptions{SeparateBoot: true, NoRootLabel: true},
			wantParts: 2, wantRoot: "/", wantKind: partition.MBR,
		},
		{
			name: "by /etc/fstab, mount_path's parent missing",
			disk: fixture.DiskOptions{Table: "gpt", NoRootLabel: true},
			opts: func(o *Options) {
				o.MountPath = filepath.Join(filepath.Dir(o.MountPath), "not", "yet", "root")
			},
			wantParts: 1, wantRoot: "/", wantKind: partition.GPT,
		},
		{
			name:      "btrfs, by /etc/fstab",
			disk:      fixture.DiskOptions{RootFS: "btrfs", NoRootLabel: true},
			wantParts: 1, wantRoot: "/", wantKind: partition.MBR,
		},
		{
			name:      "label on the wrong partition loses to root_partition",
			disk:      fixture.DiskOptions{SeparateBoot: true},
			opts:      func(o *Options) { o.RootPartition = 1 },
			wantParts: 2, wantRoot: "/boot", wantKind: partition.MBR,
		},
		{
			name:      "root_partition",
			disk:      fixture.DiskOptions{Table: "gpt", SeparateBoot: true, NoRootLabel: true},
			opts:      func(o *Options) { o.RootPartition = 2 },
			wantParts: 2, wantRoot: "/", wantKind: partition.GPT,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := fixture.NewDisk(t, tc.disk)
			e := newEnv(t, d.Path)
			if tc.opts != nil {
				tc.opts(&e.opts)
			}
			s := e.attach(t)
			if s.Table.Kind != tc.wantKind {
				t.Errorf("table kind %q, want %q", s.Table.Kind, tc.wantKind)
			}
			if len(s.Parts) != tc.wantParts {
				t.Fatalf("%d partitions attached, want %d:\n%s", len(s.Parts), tc.wantParts, s.Describe())
			}
			for _, fp := range d.Partitions {
				p := s.Partition(fp.Number)
				if p == nil {
					t.Fatalf("partition %d not attached:\n%s", fp.Number, s.Describe())
				}
				if p.FS.Type != fp.FS || !strings.EqualFold(p.FS.UUID, fp.UUID) || p.FS.Label != fp.Label {
					t.Errorf("partition %d probed as %+v, want %s %s %q", fp.Number, p.FS, fp.FS, fp.UUID, fp.Label)
				}
				if p.Start != fp.Offset || p.Size != fp.Size {
					t.Errorf("partition %d at %d+%d, want %d+%d", fp.Number, p.Start, p.Size, fp.Offset, fp.Size)
				}
				if !strings.HasPrefix(p.Device, "/dev/loop") {
					t.Errorf("partition %d device %q", fp.Number, p.Device)
				}
			}
			root, err := s.FindRoot(context.Background())
			if err != nil {
				t.Fatalf("FindRoot: %v", err)
			}
			want, _ := d.Find(tc.wantRoot)
			if root.Number != want.Number || s.Root != root || s.RootDevice() != root.Device {
				t.Errorf("FindRoot chose %s, want partition %d (%s)", root, want.Number, tc.wantRoot)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(e.opts.MountPath), "probe-*")); len(left) > 0 {
				t.Errorf("probe directories left: %v", left)
			}
			if err := s.MountRoot(); err != nil {
				t.Fatalf("MountRoot: %v", err)
			}
			marker := "etc/fstab"
			if tc.wantRoot == "/boot" {
				marker = fixture.BootMarkerFile
			}
			if _, err := s.RootFS().Lstat(marker); err != nil {
				t.Errorf("the mounted root has no %s: %v", marker, err)
			}
			if s.MountPointOf(root) != e.opts.MountPath {
				t.Errorf("MountPointOf(root) = %q", s.MountPointOf(root))
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := os.Stat(e.opts.MountPath); !os.IsNotExist(err) {
				t.Errorf("mount path %s left after Close: %v", e.opts.MountPath, err)
			}
			if got := mountPoints(t, e.dir); len(got) > 0 {
				t.Errorf("mounts left under %s: %v", e.dir, got)
			}
		})
	}
}

func TestAttachFindRootErrors(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name      string
		disk      func(t testing.TB) string
		opts      func(o *Options)
		attachErr string // Attach fails with this
		rootErr   string // else FindRoot fails with this
	}{
		{
			name:    "no root",
			disk:    fixture.NoRoot,
			rootErr: "no root filesystem found: no filesystem is labelled cloudimg-rootfs or img-rootfs and none holds /etc/fstab",
		},
		{
			name: "two partitions hold /etc/fstab",
			disk: func(t testing.TB) string {
				return fixture.Disk(t, fixture.DiskOptions{SeparateBoot: true, NoRootLabel: true, Tree: func(dir string) {
					// Moved onto the /boot filesystem by the fixture.
					os.MkdirAll(filepath.Join(dir, "boot/etc"), 0o755)
					os.WriteFile(filepath.Join(dir, "boot/etc/fstab"), []byte("# decoy\n"), 0o644)
				}})
			},
			rootErr: "2 partitions hold /etc/fstab; set root_partition",
		},
		{
			name:    "root_partition out of range",
			disk:    func(t testing.TB) string { return fixture.Disk(t, fixture.DiskOptions{}) },
			opts:    func(o *Options) { o.RootPartition = 3 },
			rootErr: "root_partition 3 does not exist; the disk has:\n  partition 1 (/dev/loop",
		},
		{
			name:    "root_partition on a disk without table",
			disk:    func(t testing.TB) string { return fixture.Disk(t, fixture.DiskOptions{Table: "none"}) },
			opts:    func(o *Options) { o.RootPartition = 1 },
			rootErr: "root_partition 1 does not exist; the disk has:\n  whole disk",
		},
		{
			name:      "not a disk",
			disk:      fixture.NotADisk,
			attachErr: "is not a disk image: it holds neither a partition table (MBR or GPT) nor a filesystem",
		},
		{
			name: "empty file",
			disk: func(t testing.TB) string {
				p := filepath.Join(t.TempDir(), "empty.raw")
				os.WriteFile(p, nil, 0o644)
				return p
			},
			attachErr: "is not a disk image",
		},
		{
			name:      "partition past the end",
			disk:      fixture.PastEnd,
			attachErr: "past the end",
		},
		{
			name:      "missing file",
			disk:      func(t testing.TB) string { return filepath.Join(t.TempDir(), "nope.raw") },
			attachErr: "no such file",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			disk := tc.disk(t)
			e := newEnv(t, disk)
			if tc.opts != nil {
				tc.opts(&e.opts)
			}
			s, err := Attach(context.Background(), e.opts)
			if tc.attachErr != "" {
				if err == nil {
					s.Close()
					t.Fatalf("Attach succeeded, want an error containing %q", tc.attachErr)
				}
				if !strings.Contains(err.Error(), tc.attachErr) {
					t.Fatalf("Attach error = %v, want one containing %q", err, tc.attachErr)
				}
				if !strings.Contains(err.Error(), disk) && !strings.Contains(err.Error(), filepath.Base(disk)) {
					t.Errorf("Attach error does not name the disk %s: %v", disk, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attach: %v", err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			_, err = s.FindRoot(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.rootErr) {
				t.Fatalf("FindRoot error = %v, want one containing %q", err, tc.rootErr)
			}
			if s.Root != nil {
				t.Errorf("a failed FindRoot set Root to %s", s.Root)
			}
		})
	}
}

// TestAttachCancelled: a cancelled context attaches nothing.
func TestAttachCancelled(t *testing.T) {
	e := newEnv(t, fixture.Disk(t, fixture.DiskOptions{SeparateBoot: true}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s, err := Attach(ctx, e.opts); err == nil {
		s.Close()
		t.Fatal("Attach with a cancelled context succeeded")
	}
}

func TestMountFstab(t *testing.T) {
	requireRoot(t)
	// noFS is the ESP in the fstab with a type no kernel mounts: what
	// becomes of a filesystem this kernel cannot mount (vfat on a kernel
	// without it; TestFATStaged has the FAT itself).
	noFS := "UUID=" + fixture.ESPUUID + " /boot/efi " + fixture.NoFSType + " umask=0077 0 1"
	// extra mounts the boot partition a second time at /srv/x through the
	// given fstab source, next to the fixture's own "UUID=... /boot" line.
	extra := func(source string) []string { return []string{source + " /srv/x ext4 defaults 0 2"} }
	type want struct {
		mounted  []string // mount points with the boot partition's marker
		skipped  map[string]string
		err      string
		required []string
	}
	tests := []struct {
		name string
		disk fixture.DiskOptions
		want want
	}{
		{name: "/boot by UUID (mbr)", disk: fixture.DiskOptions{SeparateBoot: true},
			want: want{mounted: []string{"/boot"}}},
		{name: "/boot by UUID (gpt)", disk: fixture.DiskOptions{Table: "gpt", SeparateBoot: true},
			want: want{mounted: []string{"/boot"}}},
		{name: "LABEL=", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("LABEL=" + fixture.BootLabel)},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "quoted LABEL", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra(`LABEL="` + fixture.BootLabel + `"`)},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "PARTUUID= (gpt)", disk: fixture.DiskOptions{Table: "gpt", SeparateBoot: true, FstabExtra: extra("PARTUUID=" + strings.ToLower(fixture.BootPartUUID))},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "PARTUUID= upper case (gpt)", disk: fixture.DiskOptions{Table: "gpt", SeparateBoot: true, FstabExtra: extra("PARTUUID=" + fixture.BootPartUUID)},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "PARTUUID= (mbr)", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("PARTUUID=" + strings.TrimPrefix(fixture.MBRDiskID, "0x") + "-01")},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "PARTLABEL= (gpt)", disk: fixture.DiskOptions{Table: "gpt", SeparateBoot: true, FstabExtra: extra("PARTLABEL=boot")},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "/dev/disk/by-uuid", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("/dev/disk/by-uuid/" + fixture.BootUUID)},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "/dev/vda1", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("/dev/vda1")},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "/dev/sda1", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("/dev/sda1")},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "/dev/nvme0n1p1", disk: fixture.DiskOptions{Table: "gpt", SeparateBoot: true, FstabExtra: extra("/dev/nvme0n1p1")},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "/dev/xvda1", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("/dev/xvda1")},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "auto type", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: []string{"LABEL=boot /srv/x auto defaults 0 2"}},
			want: want{mounted: []string{"/boot", "/srv/x"}}},
		{name: "second disk /dev/vdb1 is not ours", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("/dev/vdb1")},
			want: want{mounted: []string{"/boot"}, skipped: map[string]string{"/srv/x": "no device of the image matches path /dev/vdb1"}}},
		{name: "second nvme disk is not ours", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("/dev/nvme1n1p1")},
			want: want{mounted: []string{"/boot"}, skipped: map[string]string{"/srv/x": "no device of the image matches"}}},
		{name: "unknown UUID", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("UUID=00000000-0000-0000-0000-000000000000")},
			want: want{mounted: []string{"/boot"}, skipped: map[string]string{"/srv/x": "no device of the image matches UUID"}}},
		{name: "noauto", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: []string{"LABEL=boot /srv/x ext4 noauto 0 2"}},
			want: want{mounted: []string{"/boot"}}},
		{name: "swap, proc and tmpfs are left out", disk: fixture.DiskOptions{FstabExtra: []string{
			"/swapfile none swap sw 0 0", "proc /proc proc defaults 0 0", "tmpfs /tmp tmpfs defaults 0 0"}},
			want: want{}},
		{name: "ESP of a type the kernel cannot mount", disk: fixture.DiskOptions{Table: "gpt", ESP: true, SeparateBoot: true, FstabExtra: []string{noFS}},
			want: want{mounted: []string{"/boot"}, skipped: map[string]string{"/boot/efi": "this kernel cannot mount " + fixture.NoFSType + " filesystems"}}},
		{name: "required ESP of a type the kernel cannot mount", disk: fixture.DiskOptions{Table: "gpt", ESP: true, SeparateBoot: true, FstabExtra: []string{noFS}},
			want: want{required: []string{"/boot/efi"}, err: "required mount point /boot/efi (fstab line 4: " + noFS + ") cannot be mounted: this kernel cannot mount " + fixture.NoFSType}},
		{name: "required /boot", disk: fixture.DiskOptions{SeparateBoot: true},
			want: want{mounted: []string{"/boot"}, required: []string{"/boot/"}}},
		{name: "required mount not in fstab", disk: fixture.DiskOptions{SeparateBoot: true},
			want: want{required: []string{"/data"}, err: "mount point /data is required but the image's fstab has no entry for it"}},
		{name: "required mount with no device", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: extra("/dev/vdb1")},
			want: want{required: []string{"/srv/x"}, err: "required mount point /srv/x (fstab line 4: /dev/vdb1 /srv/x ext4 defaults 0 2) cannot be mounted: no device of the image matches"}},
		{name: "required noauto", disk: fixture.DiskOptions{SeparateBoot: true, FstabExtra: []string{"LABEL=boot /srv/x ext4 noauto 0 2"}},
			want: want{required: []string{"/srv/x"}, err: "required mount point /srv/x (fstab line 4: LABEL=boot /srv/x ext4 noauto 0 2) cannot be mounted: noauto"}},
		{name: "required swap", disk: fixture.DiskOptions{FstabExtra: []string{"/dev/vda2 /swap swap sw 0 0"}},
			want: want{required: []string{"/swap"}, err: "cannot be mounted: type swap is not a disk filesystem"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := fixture.NewDisk(t, tc.disk)
			e := newEnv(t, d.Path)
			e.opts.RequiredMounts = tc.want.required
			s := e.mountRoot(t)
			mounted, skipped, err := s.MountFstab()
			if tc.want.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want.err) {
					t.Fatalf("MountFstab error = %v, want one containing %q", err, tc.want.err)
				}
				if n := strings.Count(err.Error(), "required"); n > 1 {
					t.Errorf("the error repeats itself: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("MountFstab: %v", err)
			}
			var gotMounted []string
			for _, m := range mounted {
				mp, _, _ := strings.Cut(m, " ")
				gotMounted = append(gotMounted, mp)
			}
			if !slices.Equal(gotMounted, tc.want.mounted) {
				t.Errorf("mounted %q, want %q", mounted, tc.want.mounted)
			}
			for _, mp := range tc.want.mounted {
				if _, err := os.Stat(filepath.Join(e.opts.MountPath, mp, fixture.BootMarkerFile)); err != nil {
					t.Errorf("%s does not hold the boot partition: %v", mp, err)
				}
			}
			if bp, ok := d.Find("/boot"); ok && slices.Contains(tc.want.mounted, "/boot") {
				if got := s.MountPointOf(s.Partition(bp.Number)); got == "" {
					t.Errorf("MountPointOf(boot partition %d) is empty", bp.Number)
				}
			}
			gotSkipped := map[string]string{}
			for _, sk := range skipped {
				gotSkipped[sk.Entry.File] = sk.Reason
			}
			if len(gotSkipped) != len(tc.want.skipped) {
				t.Errorf("skipped %v, want %v", gotSkipped, tc.want.skipped)
			}
			for mp, reason := range tc.want.skipped {
				if !strings.Contains(gotSkipped[mp], reason) {
					t.Errorf("skipped[%s] = %q, want it to contain %q", mp, gotSkipped[mp], reason)
				}
			}
		})
	}
}

// TestMountFstabNoFstab: an image without /etc/fstab has nothing to mount.
func TestMountFstabNoFstab(t *testing.T) {
	e := newEnv(t, fixture.Disk(t, fixture.DiskOptions{Tree: func(dir string) {}}))
	s := e.mountRoot(t)
	if err := os.Remove(filepath.Join(e.opts.MountPath, "etc/fstab")); err != nil {
		t.Fatal(err)
	}
	mounted, skipped, err := s.MountFstab()
	if err != nil || len(mounted) > 0 || len(skipped) > 0 {
		t.Errorf("MountFstab without /etc/fstab = %v, %v, %v", mounted, skipped, err)
	}
}

func TestMountChroot(t *testing.T) {
	requireRoot(t)
	// Parents first: mounts are sorted by depth.
	defaults := []string{"/proc", "/sys", "/dev", "/run", "/dev/pts", "/dev/shm"}
	tests := []struct {
		name    string
		extra   [][]string
		want    []string // chroot mount points, in mount order
		wantErr string
	}{
		{name: "defaults", want: defaults},
		{name: "remove /run", extra: [][]string{{"none", "", "/run"}}, want: []string{"/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"}},
		{name: "remove an absent mount", extra: [][]string{{"none", "", "/nope"}}, want: defaults},
		{name: "extra tmpfs", extra: [][]string{{"tmpfs", "tmpfs", "/var/cache/build"}},
			want: []string{"/proc", "/sys", "/dev", "/run", "/dev/pts", "/dev/shm", "/var/cache/build"}},
		{name: "replace /run", extra: [][]string{{"tmpfs", "mytmp", "/run"}}, want: defaults},
		{name: "replace and remove", extra: [][]string{{"none", "", "/dev/pts"}, {"tmpfs", "tmpfs", "/dev/shm"}},
			want: []string{"/proc", "/sys", "/dev", "/run", "/dev/shm"}},
		{name: "wrong arity", extra: [][]string{{"tmpfs", "/x"}}, wantErr: "chroot_mounts[0]: want [fstype, source, target], got 2 values"},
		{name: "relative target", extra: [][]string{{"tmpfs", "tmpfs", "run"}}, wantErr: "must be an absolute path inside the image"},
		{name: "over the root", extra: [][]string{{"tmpfs", "tmpfs", "/"}}, wantErr: "cannot mount over the image root"},
		{name: "bind without source", extra: [][]string{{"bind", "", "/mnt/host"}}, wantErr: "source (a host path) is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fixture.Disk(t, fixture.DiskOptions{SeparateBoot: true}))
			s := e.mountRoot(t)
			if _, _, err := s.MountFstab(); err != nil {
				t.Fatal(err)
			}
			got, err := s.MountChroot(tc.extra)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("MountChroot error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("MountChroot: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("MountChroot = %q, want %q", got, tc.want)
			}
			all := mountPoints(t, e.opts.MountPath)
			// The fence and the root (both ""), /boot, then the chroot's.
			wantAll := append([]string{"", "", "/boot"}, tc.want...)
			if !slices.Equal(all, wantAll) {
				t.Errorf("mounts under the root = %q, want %q", all, wantAll)
			}
			if slices.Contains(tc.want, "/proc") {
				if _, err := os.Stat(filepath.Join(e.opts.MountPath, "proc/self/status")); err != nil {
					t.Errorf("/proc in the chroot is not a proc: %v", err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if left := mountPoints(t, e.dir); len(left) > 0 {
				t.Errorf("mounts left after Close: %v", left)
			}
		})
	}
}

// TestOpen is the one-call path post-processors use, read-write and
// read-only, on a disk with a separate /boot from the fstab.
func TestOpen(t *testing.T) {
	for _, ro := range []bool{false, true} {
		t.Run(map[bool]string{false: "read-write", true: "read-only"}[ro], func(t *testing.T) {
			e := newEnv(t, fixture.Disk(t, fixture.DiskOptions{Table: "gpt", SeparateBoot: true}))
			e.opts.ReadOnly = ro
			s, err := Open(context.Background(), e.opts, true)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			if _, err := os.Stat(filepath.Join(e.opts.MountPath, "boot", fixture.BootMarkerFile)); err != nil {
				t.Errorf("/boot not mounted: %v", err)
			}
			err = os.WriteFile(filepath.Join(e.opts.MountPath, "etc/written"), []byte("x"), 0o644)
			if ro && err == nil {
				t.Error("a read-only session let a write through")
			}
			if err := os.WriteFile(filepath.Join(e.opts.MountPath, "boot/written"), []byte("x"), 0o644); ro && err == nil {
				t.Error("a read-only session let a write to /boot through")
			}
			if !ro && err != nil {
				t.Errorf("write in a read-write session: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if _, err := os.Lstat(e.opts.MountPath); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the mount path the session made is left after Close (%v)", err)
			}
		})
	}
}

// TestOpenFailureHoldsNothing: Open on a disk without a root fails and
// leaves nothing attached (the env's leak check).
func TestOpenFailureHoldsNothing(t *testing.T) {
	e := newEnv(t, fixture.NoRoot(t))
	if s, err := Open(context.Background(), e.opts, true); err == nil {
		s.Close()
		t.Fatal("Open of a disk without root succeeded")
	}
}

// TestResolve checks the fstab source to partition table, without devices.
func TestResolve(t *testing.T) {
	part := func(n int, uuid, name, fsUUID, label string) *Partition {
		return &Partition{Partition: partition.Partition{Number: n, UUID: uuid, Name: name}, FS: mounts.FS{Type: "ext4", UUID: fsUUID, Label: label}}
	}
	gpt := &Session{Parts: []*Partition{
		part(1, "d15c0000-0000-4000-8000-0000000000e0", "EFI System", "1A2B-3C4D", "EFI"),
		part(2, "d15c0000-0000-4000-8000-0000000000b0", "boot", "b0070000-1111-4222-8333-444455556666", "boot"),
		part(3, "d15c0000-0000-4000-8000-0000000000a0", "root", "5e1f0c3a-9b7d-4e2a-8c61-0f3d2b4a7e91", "cloudimg-rootfs"),
		part(12, "", "", "", ""),
	}}
	whole := &Session{Parts: []*Partition{part(0, "", "", "5e1f0c3a-9b7d-4e2a-8c61-0f3d2b4a7e91", "rootfs")}}
	tests := []struct {
		spec string
		s    *Session
		want int // partition number; -1: none
	}{
		{"UUID=b0070000-1111-4222-8333-444455556666", gpt, 2},
		{"UUID=B0070000-1111-4222-8333-444455556666", gpt, 2},
		{"uuid=1a2b-3c4d", gpt, 1},
		{"UUID=ffffffff-1111-4222-8333-444455556666", gpt, -1},
		{"LABEL=boot", gpt, 2},
		{"LABEL=BOOT", gpt, -1}, // labels are case-sensitive
		{`LABEL="cloudimg-rootfs"`, gpt, 3},
		{"PARTUUID=D15C0000-0000-4000-8000-0000000000A0", gpt, 3},
		{"PARTLABEL=EFI\\x20System", gpt, -1},
		{"/dev/disk/by-partlabel/EFI\\x20System", gpt, 1},
		{"PARTLABEL=root", gpt, 3},
		{"/dev/disk/by-label/boot", gpt, 2},
		{"/dev/disk/by-uuid/5e1f0c3a-9b7d-4e2a-8c61-0f3d2b4a7e91", gpt, 3},
		{"/dev/sda1", gpt, 1},
		{"/dev/sda2", gpt, 2},
		{"/dev/vda3", gpt, 3},
		{"/dev/hda2", gpt, 2},
		{"/dev/xvda1", gpt, 1},
		{"/dev/vda12", gpt, 12},
		{"/dev/nvme0n1p2", gpt, 2},
		{"/dev/mmcblk0p3", gpt, 3},
		{"/dev/loop7p2", gpt, 2},
		{"/dev/vda", gpt, -1}, // the whole disk: a table disk has no partition 0
		{"/dev/vda", whole, 0},
		{"/dev/nvme0n1", whole, 0},
		{"/dev/vda4", gpt, -1},
		{"/dev/vdb1", gpt, -1}, // a second disk
		{"/dev/sdb2", gpt, -1},
		{"/dev/xvdb1", gpt, -1},
		{"/dev/nvme1n1p1", gpt, -1},
		{"/dev/nvme0n2p1", gpt, -1},
		{"/dev/mmcblk1p1", gpt, -1},
		{"/dev/vda1x", gpt, -1},
		{"/dev/mapper/root", gpt, -1},
		{"/dev/vg0/root", gpt, -1},
		{"/dev/sda1/../sdb1", gpt, -1},
		{"tmpfs", gpt, -1},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			p := tc.s.resolve(fstab.Entry{Spec: tc.spec, File: "/x", VFSType: "ext4"})
			got := -1
			if p != nil {
				got = p.Number
			}
			if got != tc.want {
				t.Errorf("resolve(%q) = partition %d, want %d", tc.spec, got, tc.want)
			}
		})
	}
}
