package loop

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const mib = 1 << 20

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := os.Stat(loopControl); err != nil {
		t.Skipf("no %s: %v", loopControl, err)
	}
}

// sparseFile makes a sparse file of size bytes in a fresh temp dir, and
// registers a check that no loop device is left bound to anything in it.
func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { assertNoLoopsUnder(t, dir) })
	return p
}

// assertNoLoopsUnder fails when a loop device is bound to a file under dir
// (other tests on the machine may hold their own devices: only ours count).
// It asks losetup (util-linux), not this package's List: a bug in List
// must not hide a leak.
func assertNoLoopsUnder(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		leaked := losetupUnder(t, dir)
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("leaked loop devices: %v", leaked)
			for dev := range leaked {
				exec.Command("losetup", "-d", dev).Run()
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// losetupUnder lists the loop devices `losetup --list --json` shows bound
// to a file under dir, device -> backing file.
func losetupUnder(t *testing.T, dir string) map[string]string {
	t.Helper()
	out, err := exec.Command("losetup", "--list", "--json", "--output", "NAME,BACK-FILE").Output()
	if err != nil {
		t.Fatalf("losetup --list: %v", err)
	}
	var list struct {
		Loopdevices []struct {
			Name string `json:"name"`
			Back string `json:"back-file"`
		} `json:"loopdevices"`
	}
	if len(bytes.TrimSpace(out)) > 0 { // no device bound: no output at all
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatalf("losetup --list --json: %v\n%s", err, out)
		}
	}
	leaked := map[string]string{}
	for _, l := range list.Loopdevices {
		if strings.HasPrefix(strings.TrimSuffix(l.Back, " (deleted)"), dir+"/") {
			leaked[l.Name] = l.Back
		}
	}
	return leaked
}

func sysInt(t *testing.T, n int, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/%s", n, name))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAttachRangeWriteThrough(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name   string
		legacy bool
	}{
		{"LOOP_CONFIGURE", false},
		{"LOOP_SET_FD+SET_STATUS64", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backing := sparseFile(t, 8*mib)
			d, err := attach(AttachOpts{Backing: backing, Offset: 1 * mib, Size: 4 * mib}, tc.legacy)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			n := d.Number()
			if got := sysInt(t, n, "size"); got != 4*mib/512 {
				t.Errorf("size = %d sectors, want %d", got, 4*mib/512)
			}
			if got := sysInt(t, n, "loop/offset"); got != 1*mib {
				t.Errorf("offset = %d, want %d", got, 1*mib)
			}
			if got := sysInt(t, n, "loop/sizelimit"); got != 4*mib {
				t.Errorf("sizelimit = %d, want %d", got, 4*mib)
			}
			if got := sysInt(t, n, "loop/autoclear"); got != 1 {
				t.Errorf("autoclear = %d, want 1", got)
			}

			s, err := Info(d.Path())
			if err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(backing, &st); err != nil {
				t.Fatal(err)
			}
			if s.Backing != backing || s.BackingIno != st.Ino || s.Offset != 1*mib || s.SizeLimit != 4*mib || !s.AutoClear || s.ReadOnly {
				t.Errorf("Info = %+v, want backing %s ino %d offset 1MiB size 4MiB autoclear rw", s, backing, st.Ino)
			}

			// Write through the device, read it back from the file at the offset.
			payload := bytes.Repeat([]byte("imagefactory"), 100)
			f, err := os.OpenFile(d.Path(), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(payload, 4096); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			got := make([]byte, len(payload))
			bf, err := os.Open(backing)
			if err != nil {
				t.Fatal(err)
			}
			_, err = bf.ReadAt(got, 1*mib+4096)
			bf.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Errorf("backing file at 1MiB+4096 does not hold what was written through %s", d.Path())
			}

			if err := d.Detach(); err != nil {
				t.Fatal(err)
			}
			if _, err := Info(d.Path()); !errors.Is(err, ErrNotBound) {
				t.Errorf("after Detach, Info(%s) = %v, want ErrNotBound", d.Path(), err)
			}
		})
	}
}

func TestAttachReadOnlyRefusesWrites(t *testing.T) {
	requireRoot(t)
	backing := sparseFile(t, 4*mib)
	d, err := Attach(backing, 0, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Detach()
	if got := sysInt(t, d.Number(), "ro"); got != 1 {
		t.Errorf("/sys/block/loop%d/ro = %d, want 1", d.Number(), got)
	}
	if got := sysInt(t, d.Number(), "size"); got != 4*mib/512 {
		t.Errorf("size = %d sectors, want %d (size 0 = to the end)", got, 4*mib/512)
	}
	f, err := os.OpenFile(d.Path(), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.Write(make([]byte, 512))
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err == nil {
		t.Errorf("writing to read-only %s succeeded", d.Path())
	}
}

func TestDetachIfBacking(t *testing.T) {
	requireRoot(t)
	backing := sparseFile(t, 4*mib)
	d, err := Attach(backing, 512, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	// A leftover binding: clear autoclear so the device outlives our fd, as
	// one bound by an older tool or a still-mounted device would.
	li, err := unix.IoctlLoopGetStatus64(d.fd)
	if err != nil {
		t.Fatal(err)
	}
	li.Flags &^= unix.LO_FLAGS_AUTOCLEAR
	if err := unix.IoctlLoopSetStatus64(d.fd, li); err != nil {
		t.Fatal(err)
	}
	d.Close()
	ino := d.Status().BackingIno
	t.Cleanup(func() { DetachIfBacking(d.Path(), backing, ino, 512) })
	for _, tc := range []struct {
		name   string
		ino    uint64
		offset int64
		want   bool // detached
		bound  bool // still bound afterwards
	}{
		{"wrong inode", ino + 1, 512, false, true},
		{"wrong offset", ino, 0, false, true},
		{"match", ino, 512, true, false},
		{"already detached", ino, 512, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DetachIfBacking(d.Path(), backing, tc.ino, tc.offset)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("DetachIfBacking = %v, want %v", got, tc.want)
			}
			_, err = Info(d.Path())
			if bound := err == nil; bound != tc.bound {
				t.Errorf("after DetachIfBacking=%v, Info err = %v", got, err)
			}
		})
	}
	if _, err := DetachIfBacking("/dev/loop999999", backing, ino, 0); err != nil {
		t.Errorf("missing device: %v, want nil (already released)", err)
	}
}

func TestDetachWhileInUse(t *testing.T) {
	requireRoot(t)
	backing := sparseFile(t, 4*mib)
	d, err := Attach(backing, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.Open(d.Path()) // stands in for a mount holding the device
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Detach(); err == nil || !strings.Contains(err.Error(), "still bound") {
		t.Errorf("Detach while in use = %v, want a 'still bound' error", err)
	}
	other.Close() // last user gone: the kernel unbinds it (autoclear)
}

func TestCloseAutoclears(t *testing.T) {
	requireRoot(t)
	backing := sparseFile(t, 4*mib)
	d, err := Attach(backing, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// sparseFile's cleanup checks the device is gone.
}

func TestBeforeConfigure(t *testing.T) {
	requireRoot(t)
	backing := sparseFile(t, 4*mib)

	var seen []Pending
	d, err := AttachWith(AttachOpts{Backing: backing, Offset: 1024, BeforeConfigure: func(p Pending) error {
		if _, err := Info(p.Device); !errors.Is(err, ErrNotBound) {
			t.Errorf("hook ran on %s while it is bound (Info err %v)", p.Device, err)
		}
		seen = append(seen, p)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Detach()
	if len(seen) == 0 || seen[len(seen)-1].Device != d.Path() || seen[len(seen)-1].BackingIno != d.Status().BackingIno || seen[len(seen)-1].Offset != 1024 {
		t.Errorf("hook saw %+v, device is %+v", seen, d.Status())
	}

	boom := errors.New("journal full")
	_, err = AttachWith(AttachOpts{Backing: backing, BeforeConfigure: func(Pending) error { return boom }})
	if !errors.Is(err, boom) {
		t.Errorf("hook error: got %v, want it wrapped", err)
	}
}

func TestAttachErrors(t *testing.T) {
	requireRoot(t)
	backing := sparseFile(t, 4*mib)
	for _, tc := range []struct {
		name         string
		path         string
		offset, size int64
		want         string
	}{
		{"missing file", filepath.Join(filepath.Dir(backing), "nope.raw"), 0, 0, "nope.raw"},
		{"offset past end", backing, 4 * mib, 0, "past the end of " + backing},
		{"range past end", backing, 1 * mib, 4 * mib, "ends at byte 5242880, past the end of " + backing},
		{"negative offset", backing, -1, 0, "negative offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Attach(tc.path, tc.offset, tc.size, false)
			if err == nil {
				d.Detach()
				t.Fatal("attach succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestParallelAttachGetsDistinctDevices(t *testing.T) {
	requireRoot(t)
	backing := sparseFile(t, 16*mib)
	const n = 8
	devs := make([]*Device, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			devs[i], errs[i] = Attach(backing, int64(i)*mib, mib, false)
		}(i)
	}
	wg.Wait()
	seen := map[string]int{}
	for i, d := range devs {
		if errs[i] != nil {
			t.Errorf("attach %d: %v", i, errs[i])
			continue
		}
		if j, dup := seen[d.Path()]; dup {
			t.Errorf("attach %d and %d both got %s", i, j, d.Path())
		}
		seen[d.Path()] = i
		if s, err := Info(d.Path()); err != nil || s.Offset != int64(i)*mib {
			t.Errorf("%s: Info = %+v, %v; want offset %d", d.Path(), s, err, int64(i)*mib)
		}
	}
	for _, d := range devs {
		if d != nil {
			if err := d.Detach(); err != nil {
				t.Error(err)
			}
		}
	}
}

func TestEnsureNodeCreatesMissingNode(t *testing.T) {
	requireRoot(t)
	p := filepath.Join(t.TempDir(), "loop0")
	if err := ensureNode(p, 0); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != 7 || unix.Minor(st.Rdev) != 0 {
		t.Errorf("%s: mode %o rdev %d:%d, want block 7:0", p, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if err := ensureNode(p, 0); err != nil { // present: nothing to do
		t.Error(err)
	}
}

// The leak check itself sees a device bound under the directory.
func TestAssertNoLoopsUnderSeesALeak(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(p, make([]byte, mib), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	if got := losetupUnder(t, dir); got[dev] != p {
		t.Errorf("losetupUnder(%s) = %v, want %s bound to %s", dir, got, dev, p)
	}
}

// TestRdev: the device number read from the held fd is the one sysfs
// gives /sys/block/loopN/dev; a closed device has none.
func TestRdev(t *testing.T) {
	requireRoot(t)
	d, err := Attach(sparseFile(t, 1*mib), 0, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rdev, err := d.Rdev()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/dev", d.Number()))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%d:%d\n", unix.Major(rdev), unix.Minor(rdev)); got != string(b) {
		t.Errorf("Rdev = %q, sysfs says %q", got, b)
	}
	d.Close()
	if _, err := d.Rdev(); err == nil {
		t.Error("Rdev of a closed device did not fail")
	}
}
