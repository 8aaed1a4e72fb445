package fatstage

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func need(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.vfat", "fsck.fat", "mcopy", "sed"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (staged files are given owner 0:0)")
	}
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// firmware makes a FAT image of the given FAT size (12, 16, 32) holding a
// Raspberry Pi OS-like firmware partition: cmdline.txt, config.txt,
// overlays/, a hidden file and a file to delete.
func firmware(t *testing.T, bits string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "fat.img")
	size := map[string]string{"12": "4M", "16": "32M", "32": "64M"}[bits]
	sh(t, "truncate", "-s", size, img)
	sh(t, "mkfs.vfat", "-F", bits, "-n", "BOOTFS", img)
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "overlays"), 0o755)
	// Raspberry Pi OS bookworm's cmdline.txt (one line; root by PARTUUID).
	os.WriteFile(filepath.Join(src, "cmdline.txt"), []byte("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait\n"), 0o644)
	os.WriteFile(filepath.Join(src, "config.txt"), []byte("[all]\ndtparam=audio=on\n"), 0o644)
	os.WriteFile(filepath.Join(src, "remove-me.txt"), []byte("bye\n"), 0o644)
	os.WriteFile(filepath.Join(src, "overlays", "disable-bt.dtbo"), []byte("dtbo"), 0o644)
	os.WriteFile(filepath.Join(src, "HIDDEN.BIN"), []byte("hidden"), 0o644)
	sh(t, "mcopy", "-s", "-m", "-i", img, filepath.Join(src, "cmdline.txt"), filepath.Join(src, "config.txt"),
		filepath.Join(src, "remove-me.txt"), filepath.Join(src, "overlays"), filepath.Join(src, "HIDDEN.BIN"), "::/")
	sh(t, "mattrib", "-i", img, "+h", "+s", "::/HIDDEN.BIN")
	return img
}

func sum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// tree lists a directory's paths with their contents ("dir" for a
// directory).
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir+"/.", func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if fi.IsDir() {
			out[rel] = "dir"
		} else {
			b, _ := os.ReadFile(p)
			out[rel] = string(b)
		}
		return nil
	})
	return out
}

// TestWriteBack runs a provisioner's usual edits with real tools on the
// staged tree, writes them back, and reads the FAT again with mtools into a
// fresh directory: the same tree, and fsck.fat -n clean, on FAT12, 16, 32.
func TestWriteBack(t *testing.T) {
	need(t)
	ctx := context.Background()
	for _, bits := range []string{"12", "16", "32"} {
		t.Run("FAT"+bits, func(t *testing.T) {
			img := firmware(t, bits)
			// The session gives a /proc/PID/fd/N path, a symbolic link.
			dir := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(t.TempDir(), dir); err != nil {
				t.Fatal(err)
			}
			st, err := Extract(ctx, img, dir, DefaultPerms)
			if err != nil {
				t.Fatal(err)
			}
			if ok, out := st.Clean(); !ok {
				t.Fatalf("the fresh FAT is not clean: %s", out)
			}
			got := tree(t, dir)
			if got["HIDDEN.BIN"] != "hidden" || got["overlays/disable-bt.dtbo"] != "dtbo" || !strings.Contains(got["cmdline.txt"], "rootwait") {
				t.Fatalf("extracted %v", got)
			}
			fi, _ := os.Stat(filepath.Join(dir, "config.txt"))
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("config.txt staged with mode %v, want vfat's default 0755", fi.Mode().Perm())
			}
			script := `set -e; cd "$1"
sed -i 's/rootwait/rootwait quiet/' cmdline.txt
echo rewritten > HIDDEN.BIN
echo "dtoverlay=vc4-kms-v3d" >> config.txt
echo new > "A new file with a long name.txt"
rm remove-me.txt
mkdir -p overlays/sub/deeper
echo deep > overlays/sub/deeper/x.dtbo
head -c 300000 /dev/urandom > big.bin
truncate -s 100000 big.bin
echo moved > tomove.txt; mv tomove.txt overlays/moved.txt
touch empty
for i in $(seq 1 40); do echo $i > overlays/f$i-with-a-long-name.txt; done
rm overlays/f1*-with-a-long-name.txt
mkdir gone; echo x > gone/x; rm -r gone
`
			sh(t, "sh", "-c", script, "sh", dir)
			c, err := st.WriteBack(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Removed) != 1 || c.Removed[0] != "remove-me.txt" {
				t.Errorf("removed %v, want [remove-me.txt]", c.Removed)
			}
			if out, err := exec.Command("fsck.fat", "-n", img).CombinedOutput(); err != nil {
				t.Errorf("fsck.fat -n after write-back: %v\n%s", err, out)
			}
			again := t.TempDir()
			if _, err := Extract(ctx, img, again, DefaultPerms); err != nil {
				t.Fatal(err)
			}
			want, back := tree(t, dir), tree(t, again)
			for p, v := range want {
				if back[p] != v {
					t.Errorf("%s reads back as %.40q, want %.40q", p, back[p], v)
				}
			}
			for p := range back {
				if _, ok := want[p]; !ok {
					t.Errorf("%s is in the FAT but not in the staged tree", p)
				}
			}
			if attrs, _, _ := strings.Cut(sh(t, "mattrib", "-i", img, "::/HIDDEN.BIN"), "::"); !strings.Contains(attrs, "SH") {
				t.Errorf("the rewritten HIDDEN.BIN has attributes %q, want its system and hidden ones kept", attrs)
			}
		})
	}
}

// TestNoChange: a stage written back untouched leaves the FAT byte for
// byte as it was.
func TestNoChange(t *testing.T) {
	need(t)
	img := firmware(t, "32")
	before := sum(t, img)
	st, err := Extract(context.Background(), img, t.TempDir(), DefaultPerms)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.WriteBack(context.Background())
	if err != nil || !c.Empty() {
		t.Fatalf("WriteBack = %v, %v; want no change", c, err)
	}
	if sum(t, img) != before {
		t.Error("the FAT changed")
	}
}

// TestRefused: what a FAT cannot hold is named, and nothing is written.
func TestRefused(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		name, script, want string
	}{
		{"symlink", "ln -s config.txt link.txt", "/link.txt is a symbolic link"},
		{"fifo", "mkfifo pipe", "/pipe is a FIFO"},
		{"case", "echo x > CONFIG.TXT", "/CONFIG.TXT and /config.txt differ only in case"},
		{"colon", "echo x > 'a:b'", `/a:b: the name holds ':'`},
		{"trailing dot", "echo x > 'a.'", "/a.: the name ends with a dot"},
		{"non-ascii", "echo x > 'café.txt'", "/café.txt: the name holds 'é'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := firmware(t, "32")
			before := sum(t, img)
			dir := t.TempDir()
			st, err := Extract(context.Background(), img, dir, DefaultPerms)
			if err != nil {
				t.Fatal(err)
			}
			sh(t, "sh", "-c", "cd \"$1\" && echo changed > cmdline.txt && "+tc.script, "sh", dir)
			_, err = st.WriteBack(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WriteBack error %v, want one saying %q", err, tc.want)
			}
			if sum(t, img) != before {
				t.Error("the FAT changed although the write-back was refused")
			}
		})
	}
}

// TestUnreadable: a FAT whose boot sector is gone is ErrUnreadable.
func TestUnreadable(t *testing.T) {
	need(t)
	img := firmware(t, "32")
	f, _ := os.OpenFile(img, os.O_WRONLY, 0)
	f.WriteAt(make([]byte, 512), 0)
	f.Close()
	_, err := Extract(context.Background(), img, t.TempDir(), DefaultPerms)
	if !errors.Is(err, ErrUnreadable) {
		t.Fatalf("Extract = %v, want ErrUnreadable", err)
	}
}

// TestEmpty: an empty FAT (a fresh ESP) stages as an empty directory, and
// what is put there is written.
func TestEmpty(t *testing.T) {
	need(t)
	img := filepath.Join(t.TempDir(), "esp.img")
	sh(t, "truncate", "-s", "40M", img)
	sh(t, "mkfs.vfat", "-F", "32", img)
	dir := t.TempDir()
	st, err := Extract(context.Background(), img, dir, Perms{FMask: 0o077, DMask: 0o077})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("the staged root has mode %v, want 0700 (umask=0077)", fi.Mode().Perm())
	}
	sh(t, "sh", "-c", `mkdir -p "$1/EFI/BOOT" && echo efi > "$1/EFI/BOOT/BOOTX64.EFI"`, "sh", dir)
	if _, err := st.WriteBack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, "mtype", "-i", img, "::/EFI/BOOT/BOOTX64.EFI"); got != "efi\n" {
		t.Errorf("BOOTX64.EFI = %q", got)
	}
}

func TestPermsFromOptions(t *testing.T) {
	for _, tc := range []struct {
		opts []string
		want Perms
		err  string
	}{
		{nil, DefaultPerms, ""},
		{[]string{"defaults"}, DefaultPerms, ""},
		{[]string{"umask=0077", "shortname=winnt"}, Perms{FMask: 0o077, DMask: 0o077}, ""},
		{[]string{"uid=1000", "gid=100", "fmask=0133", "dmask=0022"}, Perms{UID: 1000, GID: 100, FMask: 0o133, DMask: 0o022}, ""},
		{[]string{"umask=999"}, DefaultPerms, "umask=999: not an octal mask"},
		{[]string{"uid=pi"}, DefaultPerms, "uid=pi: not a numeric id"},
	} {
		got, err := PermsFromOptions(tc.opts)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.opts, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v = %+v, %v; want %+v", tc.opts, got, err, tc.want)
		}
	}
}
