package mounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

func needRoot(t *testing.T, bins ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts and loop devices")
	}
	for _, b := range append(bins, "losetup", "blkid", "mkfs.ext4") {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s: %v", b, err)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// ext4 makes an ext4 image file with a label and UUID, filled from files
// (path inside the filesystem -> content; a content starting with "->" is
// a symlink).
func ext4(t *testing.T, label, uuid string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	if err := os.MkdirAll(content, 0o755); err != nil {
		t.Fatal(err)
	}
	for p, c := range files {
		full := filepath.Join(content, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(c, "->"); ok {
			err = os.Symlink(target, full)
		} else if strings.HasSuffix(p, "/") {
			err = os.MkdirAll(full, 0o755)
		} else {
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, label+".ext4")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-F", "-L", label, "-U", uuid, "-d", content, img)
	return img
}

// loop attaches file to a loop device for the test (tests only; the
// product uses internal/loop).
func loop(t *testing.T, file string) string {
	t.Helper()
	dev := run(t, "losetup", "-f", "--show", file)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", dev, err, out)
		}
	})
	return dev
}

// mountinfo is the set of mounts, without the fields that change when
// nothing changed.
func mountinfo(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(lines)
	return lines
}

func isMountPoint(t *testing.T, p string) bool {
	t.Helper()
	for _, l := range mountinfo(t) {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

// fakeJournal records TakeMount and forget calls.
type fakeJournal struct {
	mu      sync.Mutex
	taken   []string
	forgot  []string
	failFor string
}

func (j *fakeJournal) TakeMount(target, source, fstype string) (func() error, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.failFor != "" && strings.HasSuffix(target, j.failFor) {
		return nil, errors.New("journal full")
	}
	j.taken = append(j.taken, target)
	return func() error {
		j.mu.Lock()
		defer j.mu.Unlock()
		j.forgot = append(j.forgot, target)
		return nil
	}, nil
}

func (j *fakeJournal) balanced(t *testing.T) {
	t.Helper()
	a, b := slices.Clone(j.taken), slices.Clone(j.forgot)
	slices.Sort(a)
	slices.Sort(b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("journal: taken %v, forgotten %v", j.taken, j.forgot)
	}
}

// guard checks, at the end of a test, that it left no mount, loop device
// or process in its temporary directories: the shared leak checker, scoped
// by path, so that other tests and builds on the machine do not count.
func guard(t *testing.T) {
	dir := filepath.Dir(t.TempDir())
	before := fixture.LeakSnapshot()
	t.Cleanup(func() { before.AssertNoLeaksIn(t, dir) })
}

func TestProbe(t *testing.T) {
	needRoot(t)
	img := ext4(t, "my root", "0b6d4a9e-4a7b-4a49-9f0e-1b4d3c2a1f00", nil)
	empty := filepath.Join(t.TempDir(), "zeros")
	if err := os.WriteFile(empty, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := loop(t, img)
	tests := []struct {
		name string
		dev  string
		want FS
	}{
		{"ext4 file", img, FS{Type: "ext4", Label: "my root", UUID: "0b6d4a9e-4a7b-4a49-9f0e-1b4d3c2a1f00"}},
		{"ext4 loop device", dev, FS{Type: "ext4", Label: "my root", UUID: "0b6d4a9e-4a7b-4a49-9f0e-1b4d3c2a1f00"}},
		{"zeros: no filesystem", empty, FS{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Probe(tc.dev)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Probe = %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := Probe(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Probe of a missing file succeeded")
	}
}

const (
	rootUUID = "11111111-1111-4111-8111-111111111111"
	bootUUID = "22222222-2222-4222-8222-222222222222"
)

// image is a root filesystem and a /boot filesystem on loop devices, with
// an fstab that also names an ESP-like /boot/efi of a type no kernel mounts
// (fixture.NoFSType, on a real loop device), a missing disk, swap and proc.
type image struct {
	rootDev, bootDev, espDev string
	fstab                    []fstab.Entry
}

func newImage(t *testing.T, rootFiles map[string]string) image {
	t.Helper()
	files := map[string]string{
		"etc/fstab": "UUID=" + rootUUID + " / ext4 errors=remount-ro 0 1\n" +
			"UUID=ABCD-1234 /boot/efi " + fixture.NoFSType + " umask=0077 0 1\n" + // listed before its parent on purpose
			"UUID=" + bootUUID + " /boot ext4 defaults 0 2\n" +
			"LABEL=data /data ext4 defaults,nofail 0 2\n" +
			"/swapfile none swap sw 0 0\n" +
			"proc /proc proc defaults 0 0\n",
		"boot/":          "",
		"bin/sh":         "not really a shell",
		"etc/os-release": "ID=test\n",
	}
	for k, v := range rootFiles {
		delete(files, k+"/")
		files[k] = v
	}
	img := image{
		rootDev: loop(t, ext4(t, "root", rootUUID, files)),
		bootDev: loop(t, ext4(t, "boot", bootUUID, map[string]string{"vmlinuz": "kernel", "efi/": ""})),
	}
	zeros := filepath.Join(t.TempDir(), "esp")
	if err := os.WriteFile(zeros, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	img.espDev = loop(t, zeros)
	return img
}

// resolve maps UUIDs to the image's devices, as the builder does from
// partition probing.
func (img image) resolve(e fstab.Entry) (string, bool) {
	kind, val := e.Source()
	if kind != fstab.KindUUID {
		return "", false
	}
	switch val {
	case rootUUID:
		return img.rootDev, true
	case bootUUID:
		return img.bootDev, true
	case "ABCD-1234":
		return img.espDev, true
	}
	return "", false
}

func TestStackRootFstabChroot(t *testing.T) {
	needRoot(t)
	img := newImage(t, nil)
	guard(t)
	j := &fakeJournal{}
	s := NewStack(j)
	target := filepath.Join(t.TempDir(), "root")
	t.Cleanup(func() { s.UnmountAll() })

	if err := s.MountRoot(img.rootDev, "", target, 0, ""); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Root().ReadFile("/etc/os-release"); err != nil || string(b) != "ID=test\n" {
		t.Fatalf("root not mounted: %q %v", b, err)
	}
	raw, err := s.Root().ReadFile("/etc/fstab")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := fstab.Parse(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	skipped, err := s.MountFstab(entries, img.resolve, map[string]bool{"/boot": true})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, sk := range skipped {
		reasons = append(reasons, sk.String())
	}
	wantReasons := []string{
		"/data: no device of the image matches LABEL data",
		"none: type swap is not a disk filesystem",
		"/proc: type proc is not a disk filesystem",
		"/boot/efi: this kernel cannot mount " + fixture.NoFSType + " filesystems (not in /proc/filesystems)",
	}
	if !reflect.DeepEqual(reasons, wantReasons) {
		t.Errorf("skipped:\n%s\nwant\n%s", strings.Join(reasons, "\n"), strings.Join(wantReasons, "\n"))
	}
	if b, err := s.Root().ReadFile("/boot/vmlinuz"); err != nil || string(b) != "kernel" {
		t.Errorf("/boot not mounted: %q %v", b, err)
	}

	if err := s.MountChroot(DefaultChrootMounts()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ok   func(fi os.FileInfo) bool
	}{
		{"proc/self/stat", func(fi os.FileInfo) bool { return fi.Mode().IsRegular() }},
		{"sys/kernel", func(fi os.FileInfo) bool { return fi.IsDir() }},
		{"dev/null", func(fi os.FileInfo) bool { return fi.Mode()&os.ModeCharDevice != 0 }},
		{"dev/pts/ptmx", func(fi os.FileInfo) bool { return fi.Mode()&os.ModeCharDevice != 0 }},
	} {
		fi, err := os.Stat(filepath.Join(target, c.name))
		if err != nil || !c.ok(fi) {
			t.Errorf("%s in the chroot: %v %v", c.name, fi, err)
		}
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(filepath.Join(target, "run"), &sfs); err != nil || sfs.Type != unix.TMPFS_MAGIC {
		t.Errorf("/run is not a tmpfs: %v", err)
	}
	want := []string{target, target, target + "/boot", target + "/boot/efi", target + "/proc", target + "/sys", target + "/dev", target + "/dev/pts", target + "/dev/shm", target + "/run"}
	if got := s.Mounted(); !reflect.DeepEqual(got, want) {
		t.Errorf("Mounted:\n got %v\nwant %v", got, want)
	}
	// The ESP was journaled before mount(2) said ENODEV, then forgotten;
	// its read-only placeholder took its place.
	wantTaken := slices.Insert(slices.Clone(want), 3, target+"/boot/efi")
	if !reflect.DeepEqual(j.taken, wantTaken) {
		t.Errorf("journal took %v, want %v", j.taken, wantTaken)
	}

	if err := s.UnmountAll(); err != nil {
		t.Fatal(err)
	}
	if len(s.Mounted()) != 0 || s.Root() != nil {
		t.Errorf("after UnmountAll: %v", s.Mounted())
	}
	j.balanced(t)
	// The mount point left on the host is the empty directory.
	if ents, err := os.ReadDir(target); err != nil || len(ents) != 0 {
		t.Errorf("%s not an empty directory after UnmountAll: %v %v", target, ents, err)
	}
}

// TestSkippedMountPlaceholder: a filesystem of the image the kernel cannot
// mount (fixture.NoFSType, as vfat on a kernel without it) gets an empty read-only placeholder, so a write below
// its mount point fails instead of landing in the parent filesystem; the
// mount point the build had to create is gone after unmount, and one the
// image had stays.
func TestSkippedMountPlaceholder(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name    string
		bootEFI bool // /boot/efi exists in the boot filesystem
	}{{"mount point missing", false}, {"mount point present", true}} {
		t.Run(tc.name, func(t *testing.T) {
			img := newImage(t, nil)
			bootFiles := map[string]string{"vmlinuz": "kernel"}
			if tc.bootEFI {
				bootFiles["efi/"] = ""
			}
			img.bootDev = loop(t, ext4(t, "boot", bootUUID, bootFiles))
			guard(t)
			j := &fakeJournal{}
			s := NewStack(j)
			t.Cleanup(func() { s.UnmountAll() })
			target := filepath.Join(t.TempDir(), "root")
			if err := s.MountRoot(img.rootDev, "ext4", target, 0, ""); err != nil {
				t.Fatal(err)
			}
			entries, err := fstab.Parse(strings.NewReader("UUID=" + bootUUID + " /boot ext4 defaults 0 2\n" +
				"UUID=ABCD-1234 /boot/efi " + fixture.NoFSType + " umask=0077 0 1\n"))
			if err != nil {
				t.Fatal(err)
			}
			skipped, err := s.MountFstab(entries, img.resolve, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(skipped) != 1 || skipped[0].Entry.File != "/boot/efi" || !skipped[0].Placeholder {
				t.Fatalf("skipped %+v, want /boot/efi with a placeholder", skipped)
			}
			err = os.WriteFile(filepath.Join(target, "boot/efi/grubx64.efi"), []byte("x"), 0o644)
			if !errors.Is(err, unix.EROFS) {
				t.Errorf("a write below the skipped mount: %v, want EROFS", err)
			}
			if err := os.Mkdir(filepath.Join(target, "boot/efi/EFI"), 0o755); !errors.Is(err, unix.EROFS) {
				t.Errorf("a mkdir below the skipped mount: %v, want EROFS", err)
			}
			if mi := strings.Join(mountinfo(t), "\n"); !strings.Contains(mi, target+"/boot/efi ") || !strings.Contains(mi, " "+PlaceholderSource+" ") {
				t.Errorf("no %s mount on %s/boot/efi in mountinfo", PlaceholderSource, target)
			}
			if err := s.UnmountAll(); err != nil {
				t.Fatal(err)
			}
			j.balanced(t)

			// The boot filesystem, looked at on its own.
			look := NewStack(nil)
			if err := look.MountRoot(img.bootDev, "ext4", filepath.Join(t.TempDir(), "boot"), unix.MS_RDONLY, ""); err != nil {
				t.Fatal(err)
			}
			defer look.UnmountAll()
			_, err = look.Root().Lstat("/efi")
			if tc.bootEFI && err != nil {
				t.Errorf("the image's own /boot/efi is gone: %v", err)
			}
			if !tc.bootEFI && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("/boot/efi left in the boot filesystem (err %v); the image had none", err)
			}
			if _, err := look.Root().Lstat("/efi/grubx64.efi"); err == nil {
				t.Error("the write below the skipped mount landed in the boot filesystem")
			}
		})
	}
}

func TestMountFstabRequired(t *testing.T) {
	needRoot(t)
	img := newImage(t, nil)
	raw := "UUID=" + rootUUID + " / ext4 defaults 0 1\n" +
		"UUID=" + bootUUID + " /boot ext4 defaults 0 2\n" +
		"UUID=ABCD-1234 /boot/efi " + fixture.NoFSType + " umask=0077 0 1\n" +
		"LABEL=data /data ext4 defaults 0 2\n" +
		"UUID=" + bootUUID + " /noauto ext4 noauto 0 2\n"
	entries, err := fstab.Parse(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		required map[string]bool
		wantErr  string
	}{
		{"nothing required", nil, ""},
		{"unmountable type required", map[string]bool{"/boot/efi": true}, "cannot mount " + fixture.NoFSType},
		{"missing device required", map[string]bool{"/data": true}, "no device of the image matches LABEL data"},
		{"noauto required", map[string]bool{"/noauto": true}, "noauto"},
		{"absent from fstab", map[string]bool{"/var": true}, "no entry for it"},
		{"required false is not required", map[string]bool{"/data": false}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			guard(t)
			j := &fakeJournal{}
			s := NewStack(j)
			if err := s.MountRoot(img.rootDev, "ext4", filepath.Join(t.TempDir(), "root"), 0, ""); err != nil {
				t.Fatal(err)
			}
			_, err := s.MountFstab(entries, img.resolve, tc.required)
			if uerr := s.UnmountAll(); uerr != nil {
				t.Fatal(uerr)
			}
			j.balanced(t)
			if tc.wantErr == "" && err != nil {
				t.Errorf("MountFstab: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("MountFstab error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestNoFSTypeIsENODEV: the made-up type the tests put in fstabs for "a
// filesystem this kernel cannot mount" gets from mount(2), on a real
// device, the ENODEV a kernel without vfat gives for vfat: the errno
// MountFstab decides by. It is in no /proc/filesystems.
func TestNoFSTypeIsENODEV(t *testing.T) {
	needRoot(t)
	img := newImage(t, nil)
	dir := t.TempDir()
	guard(t)
	err := unix.Mount(img.espDev, dir, fixture.NoFSType, unix.MS_RDONLY, "")
	if err == nil {
		unix.Unmount(dir, 0)
		t.Fatalf("this kernel mounted %s", fixture.NoFSType)
	}
	if !errors.Is(err, unix.ENODEV) {
		t.Errorf("mount(2) of %s: %v, want ENODEV", fixture.NoFSType, err)
	}
	if k := KernelFilesystems(); k == nil || k[fixture.NoFSType] || !k["ext4"] {
		t.Errorf("/proc/filesystems read as %v", k)
	}
}

// TestKernelMayMount: a filesystem is mountable when /proc/filesystems
// lists it or the running kernel's modules.dep or modules.builtin names
// its module (as a stock Debian kernel's lists kernel/fs/fat/vfat.ko.xz,
// loaded on the first mount); unknown when neither can be read.
func TestKernelMayMount(t *testing.T) {
	mods := t.TempDir()
	if err := os.WriteFile(filepath.Join(mods, "modules.dep"), []byte(
		"kernel/fs/fat/fat.ko.xz:\nkernel/fs/fat/vfat.ko.xz: kernel/fs/fat/fat.ko.xz\nkernel/fs/vfatx/vfatx.ko:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	builtin := t.TempDir()
	if err := os.WriteFile(filepath.Join(builtin, "modules.builtin"), []byte("kernel/fs/ext4/ext4.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := map[string]bool{"ext4": true, "xfs": true}
	for _, tc := range []struct {
		name      string
		proc      map[string]bool
		modules   string
		fstype    string
		yes, know bool
	}{
		{"listed", proc, "/nonexistent", "xfs", true, true},
		{"a module not loaded yet", proc, mods, "vfat", true, true},
		{"a module's dependency counts too", proc, mods, "fat", true, true},
		{"no such module (this machine's kernel: no modules for it)", proc, "/nonexistent", "vfat", false, true},
		{"a prefix of another module's name is not it", proc, mods, "vfa", false, true},
		{"built in", nil, builtin, "ext4", true, true},
		{"nothing readable", nil, "/nonexistent", "vfat", false, false},
	} {
		yes, known := kernelMayMount(tc.proc, tc.modules, tc.fstype)
		if yes != tc.yes || known != tc.know {
			t.Errorf("%s: kernelMayMount(%s) = %v, %v; want %v, %v", tc.name, tc.fstype, yes, known, tc.yes, tc.know)
		}
	}
	if yes, known := KernelMayMount("ext4"); !yes || !known {
		t.Errorf("KernelMayMount(ext4) on this host = %v, %v", yes, known)
	}
	if yes, _ := KernelMayMount(fixture.NoFSType); yes {
		t.Errorf("KernelMayMount(%s) on this host says yes", fixture.NoFSType)
	}
}

// TestKernelMayMountVFAT: KernelMayMount's answer for vfat, asked before
// anything in this test binary mounts a FAT, agrees with mount(2) of one
// (fixture.KernelMountsVFAT): no on a kernel without vfat (this machine),
// yes on a stock Debian kernel, which has not loaded vfat yet and says so
// through its modules list (the vfat guest, internal/vfatguest, asserts
// the log line).
func TestKernelMayMountVFAT(t *testing.T) {
	listed := KernelFilesystems()["vfat"]
	yes, known := KernelMayMount("vfat")
	if mounts := fixture.KernelMountsVFAT(t); !known || yes != mounts {
		t.Errorf("KernelMayMount(vfat) = %v, %v; mount(2) of a FAT says %v", yes, known, mounts)
	}
	t.Logf("KernelMayMount(vfat) = %v (in /proc/filesystems before: %v)", yes, listed)
}

// TestFATMountData: a FAT the kernel mounts gets the owner and modes
// fatstage gives the same fstab entry when it stages it (its defaults are
// fatstage.DefaultPerms; TestFATStaged checks the outcome on the host).
func TestFATMountData(t *testing.T) {
	for _, tc := range []struct {
		opts    []string
		want    string
		wantErr string
	}{
		{nil, "uid=0,gid=0,fmask=0022,dmask=0022", ""},
		{[]string{"umask=0077"}, "uid=0,gid=0,fmask=0077,dmask=0077", ""},
		{[]string{"defaults", "uid=1000", "gid=100", "fmask=0133", "dmask=022", "shortname=mixed"}, "uid=1000,gid=100,fmask=0133,dmask=0022", ""},
		{[]string{"umask=0099"}, "", "fstab option umask=0099: not an octal mask"},
		{[]string{"uid=root"}, "", "fstab option uid=root: not a numeric id"},
	} {
		got, err := FATMountData(tc.opts)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("FATMountData(%q) = %q, %v; want error %q", tc.opts, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("FATMountData(%q) = %q, %v; want %q", tc.opts, got, err, tc.want)
		}
	}
}

// A hostile image: its mount points are symlinks that would lead to host
// paths if resolved on the host.
func TestHostileMountTargets(t *testing.T) {
	needRoot(t)
	hostDir := t.TempDir() // a host directory the image tries to reach
	if err := os.WriteFile(filepath.Join(hostDir, "canary"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		link    string // what /boot points to in the image
		wantErr string // "" : mount must succeed, inside the root at wantAt
		wantAt  string
	}{
		{"boot -> / (host root)", "/", "resolves to the image root itself", ""},
		{"boot -> /../../etc", "/../../etc", "", "/etc"},
		{"boot -> ../../../../host dir", strings.Repeat("../", 10) + strings.TrimPrefix(hostDir, "/"), "", hostDir},
		{"boot -> absolute host dir", hostDir, "", hostDir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"boot": "->" + tc.link, "etc/": ""}
			if tc.wantAt != "" {
				files[strings.TrimPrefix(tc.wantAt, "/")+"/"] = ""
			}
			img := newImage(t, files)
			guard(t)
			j := &fakeJournal{}
			s := NewStack(j)
			target := filepath.Join(t.TempDir(), "root")
			if err := s.MountRoot(img.rootDev, "ext4", target, 0, ""); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.UnmountAll(); err != nil {
					t.Error(err)
				}
				j.balanced(t)
			}()
			e := fstab.Entry{Spec: "UUID=" + bootUUID, File: "/boot", VFSType: "ext4", Options: []string{"defaults"}}
			_, err := s.MountFstab([]fstab.Entry{e}, img.resolve, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("MountFstab error %v, want %q", err, tc.wantErr)
				}
				if got := s.Mounted(); len(got) != 2 {
					t.Errorf("mounts after refusal: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			at := target + tc.wantAt
			if !isMountPoint(t, at) {
				t.Errorf("no mount at %s inside the root; mounts: %v", at, s.Mounted())
			}
			if tc.wantAt != "/etc" && isMountPoint(t, tc.wantAt) || isMountPoint(t, "/etc") {
				t.Errorf("a mount landed on the host")
			}
			if b, err := os.ReadFile(filepath.Join(at, "vmlinuz")); err != nil || string(b) != "kernel" {
				t.Errorf("boot filesystem not at %s: %v", at, err)
			}
			if b, err := os.ReadFile(filepath.Join(hostDir, "canary")); err != nil || string(b) != "host" {
				t.Errorf("host canary changed: %q %v", b, err)
			}
		})
	}
}

func TestBindAndBusy(t *testing.T) {
	needRoot(t)
	img := newImage(t, nil)
	guard(t)
	j := &fakeJournal{}
	s := NewStack(j)
	var warnings []string
	s.Logf = func(f string, a ...any) { warnings = append(warnings, fmt.Sprintf(f, a...)) }
	s.BusyRetries, s.BusyWait = 2, 10*time.Millisecond
	target := filepath.Join(t.TempDir(), "root")
	t.Cleanup(func() { s.UnmountAll() })
	if err := s.MountRoot(img.rootDev, "ext4", target, 0, ""); err != nil {
		t.Fatal(err)
	}
	hostDir := t.TempDir()
	hostFile := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(hostFile, []byte("nameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(hostDir, "/mnt/ro", true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "mnt/ro/x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write in a read-only bind: %v, want EROFS", err)
	}
	if err := s.Bind(hostFile, "/etc/resolv.conf", false); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Root().ReadFile("etc/resolv.conf"); err != nil || !strings.Contains(string(b), "192.0.2.1") {
		t.Errorf("file bind: %q %v", b, err)
	}
	if err := s.MountInRoot("tmpfs", "/tmp/busy", "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := s.MountInRoot("tmpfs", "/", "tmpfs", 0, ""); err == nil {
		t.Error("mount over the image root accepted")
	}
	if err := s.MountInRoot("nosuchfs", "/x", "nosuchfs", 0, ""); !errors.Is(err, unix.ENODEV) {
		t.Errorf("unknown fs type: %v, want ENODEV", err)
	}
	j.failFor = "/journalfail"
	if err := s.MountInRoot("tmpfs", "/journalfail", "tmpfs", 0, ""); err == nil || isMountPoint(t, target+"/journalfail") {
		t.Errorf("mount made although the journal refused: %v", err)
	}
	// Hold the tmpfs busy: UnmountAll retries, then detaches lazily.
	f, err := os.Create(filepath.Join(target, "tmp/busy/open"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = s.UnmountAll()
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), target+"/tmp/busy") {
		t.Errorf("UnmountAll with a busy mount: %v", err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "/tmp/busy") {
		t.Errorf("warnings: %q", warnings)
	}
	if len(s.Mounted()) != 0 {
		t.Errorf("left mounted: %v", s.Mounted())
	}
	j.balanced(t)
}

// The root's mount point lives on a shared mount with a peer: nothing the
// stack mounts may show up in the peer (the fence keeps propagation out).
func TestNoPropagationToHostPeers(t *testing.T) {
	needRoot(t)
	img := newImage(t, nil)
	guard(t)
	base := t.TempDir()
	shared, peer := filepath.Join(base, "shared"), filepath.Join(base, "peer")
	for _, d := range []string{shared, peer} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", shared, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(shared, 0) })
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(shared, peer, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(peer, 0) })

	s := NewStack(&fakeJournal{})
	t.Cleanup(func() { s.UnmountAll() })
	if err := s.MountRoot(img.rootDev, "ext4", filepath.Join(shared, "root"), 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.MountChroot(DefaultChrootMounts()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(peer, "root", "etc", "os-release")); err == nil {
		t.Error("the image's root filesystem propagated to the peer mount")
	}
	for _, l := range mountinfo(t) {
		if f := strings.Fields(l); strings.HasPrefix(f[4], peer+"/root/") {
			t.Errorf("mount propagated to the peer: %s", l)
		}
	}
	if err := s.UnmountAll(); err != nil {
		t.Fatal(err)
	}
	if isMountPoint(t, filepath.Join(peer, "root")) {
		t.Error("the fence's copy stayed in the peer")
	}
}

func TestMergeChrootMounts(t *testing.T) {
	def := DefaultChrootMounts()
	tests := []struct {
		name      string
		overrides []ChrootMount
		want      []string // FSType:Target
		wantErr   string
	}{
		{"none", nil, []string{"proc:/proc", "sysfs:/sys", "tmpfs:/dev", "tmpfs:/run", "devpts:/dev/pts", "tmpfs:/dev/shm"}, ""},
		{"replace /run", []ChrootMount{{FSType: "bind", Source: "/run", Target: "/run"}},
			[]string{"proc:/proc", "sysfs:/sys", "tmpfs:/dev", "bind:/run", "devpts:/dev/pts", "tmpfs:/dev/shm"}, ""},
		{"remove /sys", []ChrootMount{{Target: "/sys/"}}, []string{"proc:/proc", "tmpfs:/dev", "tmpfs:/run", "devpts:/dev/pts", "tmpfs:/dev/shm"}, ""},
		{"add binfmt_misc, remove /dev/shm", []ChrootMount{
			{FSType: "binfmt_misc", Target: "/proc/sys/fs/binfmt_misc"},
			{Target: "/dev/shm"},
		}, []string{"proc:/proc", "sysfs:/sys", "tmpfs:/dev", "tmpfs:/run", "devpts:/dev/pts", "binfmt_misc:/proc/sys/fs/binfmt_misc"}, ""},
		{"the host's /dev", []ChrootMount{{FSType: "bind", Source: "/dev", Target: "/dev"}},
			[]string{"proc:/proc", "sysfs:/sys", "bind:/dev", "tmpfs:/run", "devpts:/dev/pts", "tmpfs:/dev/shm"}, ""},
		{"remove what is absent", []ChrootMount{{Target: "/nope"}}, []string{"proc:/proc", "sysfs:/sys", "tmpfs:/dev", "tmpfs:/run", "devpts:/dev/pts", "tmpfs:/dev/shm"}, ""},
		{"relative target", []ChrootMount{{FSType: "tmpfs", Target: "tmp"}}, nil, "absolute"},
		{"root target", []ChrootMount{{FSType: "tmpfs", Target: "/"}}, nil, "image root"},
		{"bind without source", []ChrootMount{{FSType: "bind", Target: "/x"}}, nil, "source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MergeChrootMounts(def, tc.overrides)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, m := range got {
				s = append(s, m.FSType+":"+m.Target)
				if m.Source == "" {
					t.Errorf("%s has no source", m.Target)
				}
			}
			if !reflect.DeepEqual(s, tc.want) {
				t.Errorf("got %v\nwant %v", s, tc.want)
			}
		})
	}
	if !reflect.DeepEqual(def, DefaultChrootMounts()) {
		t.Error("MergeChrootMounts changed its input")
	}
}

// A process still using the root filesystem: the root is detached lazily,
// taking the mounts beneath it, and every journal entry is released.
func TestRootBusyDetachesWholeTree(t *testing.T) {
	needRoot(t)
	img := newImage(t, nil)
	guard(t)
	j := &fakeJournal{}
	s := NewStack(j)
	s.BusyRetries, s.BusyWait = 1, 10*time.Millisecond
	target := filepath.Join(t.TempDir(), "root")
	t.Cleanup(func() { s.UnmountAll() })
	if err := s.MountRoot(img.rootDev, "ext4", target, 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.MountChroot(DefaultChrootMounts()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(target, "etc/os-release"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = s.UnmountAll()
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), target+" was busy") {
		t.Errorf("UnmountAll: %v", err)
	}
	if len(s.Mounted()) != 0 || isMountPoint(t, target) {
		t.Errorf("still mounted: %v", s.Mounted())
	}
	j.balanced(t)
}

// TestUnmountableServed: the Unmountable hook serves the entry the kernel
// cannot mount (fixture.NoFSType, as vfat on a kernel without it) with a
// MountStage tmpfs (not a placeholder, not skipped): writable, of the size,
// mode and owner asked, reached again by OpenMount; a hook that declines
// adds its reason to the skip; the mount point the stage created goes at
// unmount.
func TestUnmountableServed(t *testing.T) {
	needRoot(t)
	entries, err := fstab.Parse(strings.NewReader("UUID=" + bootUUID + " /boot ext4 defaults 0 2\n" +
		"UUID=ABCD-1234 /boot/efi " + fixture.NoFSType + " umask=0077 0 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, serve := range []bool{true, false} {
		t.Run(map[bool]string{true: "served", false: "declined"}[serve], func(t *testing.T) {
			img := newImage(t, nil)
			img.bootDev = loop(t, ext4(t, "boot", bootUUID, map[string]string{"vmlinuz": "kernel"}))
			guard(t)
			j := &fakeJournal{}
			s := NewStack(j)
			t.Cleanup(func() { s.UnmountAll() })
			target := filepath.Join(t.TempDir(), "root")
			if err := s.MountRoot(img.rootDev, "ext4", target, 0, ""); err != nil {
				t.Fatal(err)
			}
			var host string
			s.Unmountable = func(e fstab.Entry, dev, fstype string) (bool, string, error) {
				if e.File != "/boot/efi" || fstype != fixture.NoFSType {
					t.Errorf("asked about %s (%s)", e.File, fstype)
				}
				if !serve {
					return false, "not today", nil
				}
				h, err := s.MountStage(e.File, 1<<20, 0o700, 0, 0)
				host = h
				return err == nil, "", err
			}
			skipped, err := s.MountFstab(entries, img.resolve, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !serve {
				if len(skipped) != 1 || !strings.HasSuffix(skipped[0].Reason, "; not today") || !skipped[0].Placeholder {
					t.Errorf("skipped %+v, want /boot/efi with the hook's reason and a placeholder", skipped)
				}
				return
			}
			if len(skipped) != 0 || host != target+"/boot/efi" {
				t.Fatalf("skipped %+v, staged at %q", skipped, host)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(host, &st); err != nil || st.Blocks*uint64(st.Bsize) != 1<<20 {
				t.Errorf("the stage is %d bytes (%v), want 1 MiB", st.Blocks*uint64(st.Bsize), err)
			}
			if fi, err := os.Stat(host); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("the stage's mode: %v, %v", fi, err)
			}
			if err := os.WriteFile(host+"/grubx64.efi", []byte("x"), 0o644); err != nil {
				t.Error(err)
			}
			fd, err := s.OpenMount(host)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(inroot.ProcPath(fd) + "/grubx64.efi"); err != nil {
				t.Errorf("OpenMount does not reach the stage: %v", err)
			}
			fd.Close()
			if _, err := s.OpenMount(target + "/boot/nothing"); err == nil {
				t.Error("OpenMount of a path the stack never mounted succeeded")
			}
			if err := s.UnmountAll(); err != nil {
				t.Fatal(err)
			}
			j.balanced(t)
			look := NewStack(nil)
			if err := look.MountRoot(img.bootDev, "ext4", filepath.Join(t.TempDir(), "boot"), unix.MS_RDONLY, ""); err != nil {
				t.Fatal(err)
			}
			defer look.UnmountAll()
			if _, err := look.Root().Lstat("/efi"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("/boot/efi left in the boot filesystem (err %v); the image had none", err)
			}
		})
	}
}

// TestIsPrivateDev: only the default tmpfs on /dev is populated with
// device nodes; a bind of the host's /dev (chroot_mounts) or another tmpfs
// never gets a node made in it.
func TestIsPrivateDev(t *testing.T) {
	def := DefaultChrootMounts()
	i := slices.IndexFunc(def, func(m ChrootMount) bool { return m.Target == "/dev" })
	if i < 0 || !def[i].IsPrivateDev() {
		t.Fatalf("the default /dev is not the private /dev: %+v", def)
	}
	for _, tc := range []struct {
		m    ChrootMount
		want bool
	}{
		{ChrootMount{FSType: "tmpfs", Source: PrivateDevSource, Target: "/dev/"}, true},
		{ChrootMount{FSType: "bind", Source: "/dev", Target: "/dev"}, false},
		{ChrootMount{FSType: "bind", Source: PrivateDevSource, Target: "/dev"}, false},
		{ChrootMount{FSType: "tmpfs", Source: "tmpfs", Target: "/dev"}, false},
		{ChrootMount{FSType: "tmpfs", Source: PrivateDevSource, Target: "/mnt/dev"}, false},
		{ChrootMount{FSType: "devtmpfs", Source: PrivateDevSource, Target: "/dev"}, false},
	} {
		if got := tc.m.IsPrivateDev(); got != tc.want {
			t.Errorf("%+v: IsPrivateDev = %v, want %v", tc.m, got, tc.want)
		}
	}
}
