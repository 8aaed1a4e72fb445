package sandbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestGroupID(t *testing.T) {
	for _, tc := range []struct {
		name  string
		group string
		want  int
	}{
		{"debian", "root:x:0:\ntty:x:5:\ndisk:x:6:\n", 6},
		{"other gid", "root:x:0:\ndisk:x:993:alice,bob\n", 993},
		{"no disk group", "root:x:0:\nshadow:x:42:\n", DiskGID},
		{"no file", "", DiskGID},
		{"prefix is not the name", "disks:x:7:\ndiskx:x:8:\n", DiskGID},
		{"malformed gid", "disk:x:six:\n", DiskGID},
		{"negative gid", "disk:x:-1:\n", DiskGID},
		{"short line", "disk:x\n", DiskGID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := GroupID([]byte(tc.group), "disk", DiskGID); got != tc.want {
				t.Errorf("GroupID = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestLoopNodes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		devs    map[string]uint64
		want    []Node
		wantErr string
	}{
		{"none", nil, nil, ""},
		{"two, sorted", map[string]uint64{"/dev/loop12": unix.Mkdev(7, 12), "/dev/loop3": unix.Mkdev(7, 3)}, []Node{
			{Name: "loop12", Block: true, Major: 7, Minor: 12, Mode: 0o660, GID: 6},
			{Name: "loop3", Block: true, Major: 7, Minor: 3, Mode: 0o660, GID: 6},
		}, ""},
		{"not in /dev", map[string]uint64{"/dev/loop/3": unix.Mkdev(7, 3)}, nil, "not in /dev"},
		{"dot dot", map[string]uint64{"/dev/..": unix.Mkdev(7, 3)}, nil, "plain file name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoopNodes(tc.devs, 6)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("LoopNodes = %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := BlockNode(name, unix.Mkdev(7, 0), 6); err == nil {
			t.Errorf("BlockNode(%q) did not fail", name)
		}
	}
}

// TestPopulateLikeDevtmpfs: the nodes Populate makes in a fresh tmpfs have
// the type, device number, mode and owner the kernel's devtmpfs gives the
// same names (devtmpfs, not the host's udev, is the reference); the links
// are the listed ones and nothing else is there; a block node gets its mode
// and group whatever the umask; populating twice fails.
func TestPopulateLikeDevtmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod and mount need root")
	}
	devtmpfs := fixture.Devtmpfs(t)
	dir := t.TempDir()
	loop := Node{Name: "loop7", Block: true, Major: 7, Minor: 7, Mode: 0o660, GID: 6}
	err := fixture.InPrivateMountNS(t, func() error {
		if err := unix.Mount("tmpfs", dir, "tmpfs", privateDevFlagsForTest, "mode=0755,size=4m"); err != nil {
			return err
		}
		defer unix.Unmount(dir, unix.MNT_DETACH)
		f, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		old := unix.Umask(0o077)
		err = Populate(f, append(slices.Clone(CharDevices), loop), Links, Dirs)
		unix.Umask(old)
		if err != nil {
			return err
		}
		var names []string
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			names = append(names, e.Name())
		}
		var want []string
		for _, n := range CharDevices {
			want = append(want, n.Name)
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, n.Name), &st); err != nil {
				t.Errorf("%s: %v", n.Name, err)
				continue
			}
			ref, ok := devtmpfs[n.Name]
			if !ok {
				t.Errorf("the kernel's devtmpfs has no %s", n.Name)
				continue
			}
			got := fixture.DevtmpfsEntry{Mode: os.FileMode(st.Mode & 0o777), Rdev: st.Rdev, UID: st.Uid, GID: st.Gid}
			if st.Mode&unix.S_IFMT != unix.S_IFCHR || ref.Mode&os.ModeCharDevice == 0 {
				t.Errorf("%s is not a character device (mode %o; devtmpfs: %v)", n.Name, st.Mode, ref.Mode)
			}
			if ref.Mode = ref.Mode.Perm(); got != ref {
				t.Errorf("%s = %+v, devtmpfs has %+v", n.Name, got, ref)
			}
		}
		for _, l := range Links {
			want = append(want, l.Name)
			if got, err := os.Readlink(filepath.Join(dir, l.Name)); err != nil || got != l.Target {
				t.Errorf("%s -> %q (%v), want -> %q", l.Name, got, err, l.Target)
			}
		}
		want = append(append(want, loop.Name), Dirs...)
		for _, d := range Dirs {
			if st, err := os.Lstat(filepath.Join(dir, d)); err != nil || st.Mode() != fs.ModeDir|0o755 {
				t.Errorf("%s: %v, %v; want a directory, mode 0755", d, st, err)
			}
		}
		slices.Sort(names)
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Errorf("the private /dev holds %q, want %q", names, want)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, "loop7"), &st); err != nil {
			return err
		}
		if st.Mode != unix.S_IFBLK|0o660 || st.Rdev != unix.Mkdev(7, 7) || st.Uid != 0 || st.Gid != 6 {
			t.Errorf("loop7: mode %o rdev %d:%d owner %d:%d, want block 0660 7:7 0:6", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Uid, st.Gid)
		}
		if err := Populate(f, CharDevices, nil, nil); !errors.Is(err, unix.EEXIST) {
			t.Errorf("populating twice: %v, want EEXIST", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

const privateDevFlagsForTest = unix.MS_NOSUID | unix.MS_STRICTATIME
