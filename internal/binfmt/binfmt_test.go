package binfmt

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestFormatsAreDebians: our magic and mask strings are those Debian's
// qemu-user-static registers (generated from qemu-binfmt-conf.sh).
func TestFormatsAreDebians(t *testing.T) {
	checked := 0
	for q, f := range formats {
		b, err := os.ReadFile("/usr/lib/binfmt.d/qemu-" + q + ".conf")
		if err != nil {
			continue
		}
		fields := strings.Split(strings.TrimSpace(string(b)), ":")
		if len(fields) < 7 {
			t.Fatalf("%s: %q", q, b)
		}
		if string(unescape(fields[4])) != string(unescape(f.magic)) || string(unescape(fields[5])) != string(unescape(f.mask)) {
			t.Errorf("%s: Debian's magic/mask %s / %s, ours %s / %s", q, fields[4], fields[5], f.magic, f.mask)
		}
		checked++
	}
	if checked == 0 {
		t.Skip("no /usr/lib/binfmt.d/qemu-*.conf (qemu-user-static not installed)")
	}
}

func TestMatches(t *testing.T) {
	// As the kernel prints Debian's qemu-aarch64 entry (bm_entry_read).
	deb := parse("qemu-aarch64", []byte("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n"))
	if !deb.Fixed() || !deb.Enabled || deb.Interpreter != "/usr/libexec/qemu-binfmt/aarch64-binfmt-P" {
		t.Fatalf("parse: %+v", deb)
	}
	for a, want := range map[arch.Arch]bool{arch.ARM64: true, arch.ARMHF: false, arch.RISCV64: false, arch.AMD64: false} {
		if deb.Matches(a) != want {
			t.Errorf("Debian's qemu-aarch64 matches %s: %v, want %v", a, !want, want)
		}
	}
	arm := parse("qemu-arm", []byte("disabled\ninterpreter /usr/bin/qemu-arm-static\nflags: \noffset 0\nmagic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n"))
	if arm.Matches(arch.ARMHF) || arm.Fixed() {
		t.Error("a disabled entry without F is not usable")
	}
	arm.Enabled = true
	if !arm.Matches(arch.ARMHF) || !arm.Matches(arch.ARMEL) {
		t.Error("qemu-arm serves armhf and armel")
	}
	// A magic that only matches ET_EXEC (no \xfe in the mask) misses PIE
	// binaries: not a registration for the image.
	exe := parse("exec-only", []byte("enabled\ninterpreter /x\nflags: F\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n"))
	if exe.Matches(arch.ARM64) {
		t.Error("an ET_EXEC-only magic matched")
	}
	if (Registration{Enabled: true, Flags: "F", Extension: "jar"}).Matches(arch.ARM64) {
		t.Error("an extension entry matched")
	}
}

func requireQEMU(t *testing.T, a arch.Arch) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (binfmt_misc)")
	}
	if _, err := os.Stat(Interpreter(a)); err != nil {
		t.Skipf("%v (install qemu-user-static)", err)
	}
}

func openJournal(t *testing.T) *cleanup.Journal {
	t.Helper()
	j, err := cleanup.Open(filepath.Join(t.TempDir(), "state"), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	})
	return j
}

func chrootRun(t *testing.T, root, cmd string) (string, error) {
	t.Helper()
	out, err := exec.Command("chroot", root, "/bin/sh", "-c", cmd).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestEnable: an arm64 busybox runs in a chroot with nothing of qemu in
// it; two builds share one registration; the last release leaves the
// host's binfmt_misc as it was.
func TestEnable(t *testing.T) {
	requireQEMU(t, arch.ARM64)
	root := t.TempDir()
	fixture.ForeignBusyboxTree(t, root, "arm64")
	if _, err := chrootRun(t, root, "true"); err == nil && !hostHasFixed(t, arch.ARM64) {
		t.Skip("arm64 binaries already run here without us")
	}
	before := fixture.Binfmt(t)

	j1, j2 := openJournal(t), openJournal(t)
	rel1, how, err := Enable(j1, arch.ARM64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first: %s", how)
	rel2, how2, err := Enable(j2, arch.ARM64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second: %s", how2)
	if out, err := chrootRun(t, root, "uname -m"); err != nil || out != "aarch64" {
		t.Fatalf("uname -m in the chroot: %q, %v", out, err)
	}
	if err := rel1(); err != nil {
		t.Fatal(err)
	}
	if out, err := chrootRun(t, root, "uname -m"); err != nil || out != "aarch64" {
		t.Fatalf("after the first release, the second build's chroot: %q, %v", out, err)
	}
	if err := rel2(); err != nil {
		t.Fatal(err)
	}
	fixture.CheckBinfmt(t, before)
	noOwnShares(t)
	if !hostHasFixed(t, arch.ARM64) {
		if _, err := chrootRun(t, root, "true"); err == nil {
			t.Error("arm64 binaries still run after the last release")
		}
	}
	if m, _ := filepath.Glob(filepath.Join(root, "usr/bin/qemu-*")); len(m) > 0 {
		t.Errorf("interpreter in the image: %v", m)
	}
}

// hostHasFixed reports whether someone else's F registration serves a.
func hostHasFixed(t *testing.T, a arch.Arch) bool {
	regs, err := Registrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range regs {
		if !strings.HasPrefix(r.Name, cleanup.BinfmtPrefix) && r.Fixed() && r.Matches(a) {
			return true
		}
	}
	return false
}

// TestEnableUsesHostRegistration: a host registration with F is used as it
// is; Enable registers nothing and its release leaves the host's alone.
// The host's entry is made here through a share of its own, so it goes
// even if the test dies.
func TestEnableUsesHostRegistration(t *testing.T) {
	requireQEMU(t, arch.ARM64)
	before := fixture.Binfmt(t)
	hostJ := openJournal(t)
	hostName := cleanup.BinfmtPrefix + "test-host-aarch64"
	unlock, err := cleanup.LockBinfmt()
	if err != nil {
		t.Fatal(err)
	}
	h, err := hostJ.TakeBinfmt(hostName)
	if err == nil && !cleanup.BinfmtMounted() {
		if err = cleanup.MarkBinfmtMount(); err == nil {
			err = syscall.Mount("binfmt_misc", cleanup.BinfmtMisc, "binfmt_misc", 0, "")
		}
	}
	if err == nil {
		f := formats["aarch64"]
		err = os.WriteFile(filepath.Join(cleanup.BinfmtMisc, "register"), []byte(":"+hostName+":M::"+f.magic+":"+f.mask+":"+Interpreter(arch.ARM64)+":F"), 0)
	}
	unlock()
	if err != nil {
		hostJ.Release(h)
		t.Fatal(err)
	}

	root := t.TempDir()
	fixture.ForeignBusyboxTree(t, root, "arm64")
	withHost := fixture.Binfmt(t)
	j := openJournal(t)
	rel, how, err := Enable(j, arch.ARM64)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(how, hostName) {
		t.Errorf("how = %q; want the host's registration %s", how, hostName)
	}
	if _, err := os.Stat(filepath.Join(cleanup.BinfmtMisc, Name(arch.ARM64))); err == nil && binfmtSharesOf(Name(arch.ARM64)) == 0 {
		t.Errorf("Enable registered %s although the host's serves", Name(arch.ARM64))
	}
	if out, err := chrootRun(t, root, "uname -m"); err != nil || out != "aarch64" {
		t.Fatalf("uname -m: %q, %v", out, err)
	}
	if err := rel(); err != nil {
		t.Fatal(err)
	}
	fixture.CheckBinfmt(t, withHost)
	if err := hostJ.Release(h); err != nil {
		t.Fatal(err)
	}
	fixture.CheckBinfmt(t, before)
	noOwnShares(t)
}

// noOwnShares fails if this process still holds a share: the test's own
// shares count as live, so CheckBinfmt cannot see them.
func noOwnShares(t *testing.T) {
	t.Helper()
	own, _ := filepath.Glob(filepath.Join(cleanup.BinfmtState, "users", "*", strconv.Itoa(os.Getpid())+"-*"))
	if len(own) > 0 {
		t.Errorf("shares of this process left: %v", own)
	}
}

func binfmtSharesOf(name string) int {
	m, _ := os.ReadDir(filepath.Join(cleanup.BinfmtState, "users", name))
	return len(m)
}

// TestEnableErrors: no interpreter on the host, an architecture qemu-user
// does not emulate: one error each, nothing left.
func TestEnableErrors(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	before := fixture.Binfmt(t)
	t.Run("no interpreter", func(t *testing.T) {
		if hostHasFixed(t, arch.ARMHF) {
			t.Skip("the host serves armhf itself")
		}
		t.Setenv(interpreterDirEnv, t.TempDir())
		j := openJournal(t)
		_, _, err := Enable(j, arch.ARMHF)
		if !errors.Is(err, ErrNoInterpreter) || !strings.Contains(err.Error(), "qemu-user-static") || !strings.Contains(err.Error(), "qemu-arm-static") {
			t.Fatalf("err = %v; want ErrNoInterpreter naming qemu-user-static", err)
		}
	})
	t.Run("no emulator", func(t *testing.T) {
		j := openJournal(t)
		_, _, err := Enable(j, arch.Arch("mips64el"))
		if err == nil || !strings.Contains(err.Error(), "mips64el") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("native", func(t *testing.T) {
		j := openJournal(t)
		rel, how, err := Enable(j, arch.Host())
		if err != nil || !strings.Contains(how, "natively") {
			t.Fatalf("%q, %v", how, err)
		}
		if err := rel(); err != nil {
			t.Fatal(err)
		}
	})
	fixture.CheckBinfmt(t, before)
	noOwnShares(t)
}

// TestReapAfterKill: a build SIGKILLed while it holds a registration
// leaves it; the next build's Reap removes it (and the mount it made).
func TestReapAfterKill(t *testing.T) {
	requireQEMU(t, arch.RISCV64)
	if os.Getenv("BINFMT_TEST_HOLDER") != "" {
		j, err := cleanup.Open(os.Getenv("BINFMT_TEST_HOLDER"), "holder")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Enable(j, arch.RISCV64); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("HOLDING\n")
		time.Sleep(time.Minute)
		return
	}
	before := fixture.Binfmt(t)
	state := filepath.Join(t.TempDir(), "state")
	cmd := exec.Command(os.Args[0], "-test.run=^TestReapAfterKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BINFMT_TEST_HOLDER="+state)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	held := false
	for sc.Scan() {
		if sc.Text() == "HOLDING" {
			held = true
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !held {
		t.Fatal("the holder did not enable riscv64")
	}
	if _, err := os.Stat(filepath.Join(cleanup.BinfmtMisc, Name(arch.RISCV64))); err != nil {
		t.Fatalf("after the kill, the registration should still be there: %v", err)
	}
	rep, err := cleanup.Reap(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reaped: %v", rep.Released)
	fixture.CheckBinfmt(t, before)
	if _, err := os.Stat(filepath.Join(cleanup.BinfmtMisc, Name(arch.RISCV64))); err == nil {
		t.Errorf("%s still registered after the reap", Name(arch.RISCV64))
	}
}
