package imagefactory_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// abortFailing is a provisioner that leaves a mark to inspect and a
// daemon in the chroot, then fails.
const abortFailing = `provisioner "shell" {
    inline = [
      "echo inspect-me > /root/marker",
      "setsid sleep 600 </dev/null >/dev/null 2>&1 &",
      "echo about to fail",
      "exit 7",
    ]
  }`

var (
	keptMountRe = regexp.MustCompile(`root filesystem is mounted at (\S+) \(look inside`)
	// Packer prefixes each line of a message with "==> <build>: ".
	reapCommandRe = regexp.MustCompile(`(?m)^==> [^:]+: {3}(\S.* reap --journal .*?)\s*$`)
	// The command that enters the kept sandbox's namespaces.
	enterRe = regexp.MustCompile(`(?m)^==> [^:]+: {3}(sh -c 'echo \$\$ >/sys/fs/cgroup/\S+/cgroup.procs && exec nsenter --target \d+ .*/bin/sh')\s*$`)
)

// TestAccAbort: packer build -on-error=abort with a failing provisioner
// keeps the image mounted with its loop devices and the daemon the
// provisioner started, and prints the mount path and the command that
// releases them; a later build leaves it all and prints the command again,
// and one that wants its output directory is refused; the printed command,
// run as printed, releases everything. -on-error=cleanup is unchanged.
func TestAccAbort(t *testing.T) {
	requireRoot(t)
	disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})

	t.Run("abort", func(t *testing.T) {
		a := newAcc(t)
		binfmt := fixture.Binfmt(t)
		a.BuildFlags = []string{"-on-error=abort"}
		res := a.Build(t, template(``, abortFailing), map[string]string{"base": disk.Path})
		t.Logf("aborted build:\n%s", res.Output)
		if res.ExitCode == 0 {
			t.Fatal("a failing provisioner built")
		}
		// The SDK's abort message names the step (not our guard).
		if !strings.Contains(res.Output, `Step "StepProvision" failed, aborting`) {
			t.Errorf("the output does not name the failed step")
		}
		m := keptMountRe.FindStringSubmatch(res.Output)
		c := reapCommandRe.FindStringSubmatch(res.Output)
		if m == nil || c == nil {
			t.Fatal("the aborted build does not print its mount path and the reap command")
		}
		mnt, command := m[1], c[1]
		// Whatever happens below, nothing stays on the machine.
		t.Cleanup(func() { cleanup.ReapKept(filepath.Join(a.Base, "state")) })

		// Kept: mounted (root and the fstab's /boot), loop devices bound to
		// the working disk, the daemon alive, the image readable.
		for _, p := range []string{mnt, mnt + "/boot", mnt + "/proc"} {
			if ok, err := cleanup.IsMountPoint(p); !ok || err != nil {
				t.Errorf("%s is not mounted after the abort (%v)", p, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(mnt, "root/marker")); string(b) != "inspect-me\n" {
			t.Errorf("the provisioner's mark in the kept image: %q, %v", b, err)
		}
		if out, err := exec.Command("chroot", mnt, "/bin/cat", "/root/marker").CombinedOutput(); err != nil || string(out) != "inspect-me\n" {
			t.Errorf("chroot %s /bin/cat /root/marker: %v: %s", mnt, err, out)
		}
		kept := strings.Join(a.before.LeftIn(a.OwnDirs()...), "\n")
		t.Logf("kept:\n%s", kept)
		if n := strings.Count(kept, "loop device"); n < 2 || !strings.Contains(kept, a.out()) {
			t.Errorf("%d loop devices kept, want those of the root and /boot on the working disk in %s", n, a.out())
		}
		if !strings.Contains(kept, "root="+mnt+" sleep 600") {
			t.Error("the provisioner's daemon is not kept running in the chroot")
		}
		// The printed command enters the sandbox: its root, its PID
		// namespace (the daemon is there) and its cgroup namespace's root
		// (the device filter's cgroup).
		if e := enterRe.FindStringSubmatch(res.Output); e == nil {
			t.Errorf("the aborted build does not print the command that enters its sandbox's namespaces and cgroup:\n%s", res.Output)
		} else {
			cmd := exec.Command("sh", "-c", e[1])
			cmd.Stdin = strings.NewReader("cat /root/marker; ps -e 2>/dev/null || ls /proc; grep '^0::' /proc/self/cgroup\n")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "inspect-me") || !strings.Contains(string(out), "0::/\n") {
				t.Errorf("%s: %v:\n%s", e[1], err, out)
			}
		}
		if js, _ := filepath.Glob(filepath.Join(a.state, "*.journal")); len(js) != 1 || !strings.Contains(command, js[0]) {
			t.Errorf("journals %v; the command %q does not name the one kept", js, command)
		}

		// A later build leaves it, and says how to release it.
		a.BuildFlags = nil
		res = mustBuild(t, a, template(``, `provisioner "shell" { inline = ["true"] }`),
			map[string]string{"base": disk.Path, "out": "later"})
		if !strings.Contains(res.Output, "An aborted build is kept for inspection") || !strings.Contains(res.Output, command) {
			t.Errorf("the later build does not remind of the kept build and its command %q:\n%s", command, res.Output)
		}
		// One on the kept build's output directory is refused, even with -force.
		a.BuildFlags = []string{"-force"}
		res = a.Build(t, template(``, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": disk.Path})
		if res.ExitCode == 0 || !strings.Contains(res.Output, "output directory out is still held by an aborted build kept for inspection") {
			t.Errorf("a build on the kept build's output directory was not refused:\n%s", res.Output)
		}
		if ok, _ := cleanup.IsMountPoint(mnt); !ok {
			t.Fatal("a later build released the kept build")
		}
		if _, err := os.Stat(a.out()); err != nil {
			t.Fatalf("a later build removed the kept build's output directory: %v", err)
		}

		// The command, exactly as printed.
		start := time.Now()
		out, err := exec.Command("sh", "-c", command).CombinedOutput()
		t.Logf("%s (%s):\n%s", command, time.Since(start).Round(time.Millisecond), out)
		if err != nil {
			t.Fatalf("%s: %v", command, err)
		}
		// The daemon and the sandbox's init (issue 18), at least.
		if !regexp.MustCompile(`^killed [2-9] processes rooted in ` + regexp.QuoteMeta(mnt)).MatchString(string(out)) {
			t.Errorf("the reap's output does not start with the daemon and the sandbox init killed")
		}
		for _, want := range []string{"unmounted " + mnt + "/dev\n", "unmounted " + mnt + "/boot", "removed " + a.out()} {
			if !strings.Contains(string(out), want) {
				t.Errorf("the reap's output lacks %q", want)
			}
		}
		// The daemon holds /dev/null: it must be stopped first.
		if !strings.HasPrefix(string(out), "killed ") || strings.Contains(string(out), "lazily") {
			t.Error("the reap did not stop the chroot's processes before unmounting")
		}
		a.assertNoLeaks(t)
		fixture.CheckBinfmt(t, binfmt)
		for _, p := range []string{mnt, a.out()} {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s left after the reap (%v)", p, err)
			}
		}
		if _, err := os.Stat(filepath.Join(a.Dir, "later", "t.raw")); err != nil {
			t.Errorf("the later build's artifact: %v", err)
		}
	})

	// An image of another architecture: its binfmt_misc registration is
	// kept with it (its chroot still runs), even through another build of
	// that architecture, which would otherwise remove it when it ends as
	// the share of a dead build; the reap removes it.
	t.Run("foreign", func(t *testing.T) {
		if _, err := os.Stat("/usr/bin/qemu-arm-static"); err != nil {
			t.Skipf("qemu-user-static: %v", err)
		}
		armhf := fixture.FirmwareDisk(t, fixture.FirmwareDiskOptions{Arch: "armhf"})
		reg := filepath.Join(cleanup.BinfmtMisc, "imagefactory-qemu-arm")
		a := newAcc(t)
		before := fixture.Binfmt(t)
		a.BuildFlags = []string{"-on-error=abort"}
		res := a.Build(t, template(``, `provisioner "shell" { inline = ["uname -m", "exit 7"] }`), map[string]string{"base": armhf.Path})
		m := keptMountRe.FindStringSubmatch(res.Output)
		c := reapCommandRe.FindStringSubmatch(res.Output)
		if res.ExitCode == 0 || m == nil || c == nil {
			t.Fatalf("exit %d; want a failure kept for inspection:\n%s", res.ExitCode, res.Output)
		}
		t.Cleanup(func() { cleanup.ReapKept(filepath.Join(a.Base, "state")) })
		a.BuildFlags = nil
		mustBuild(t, a, template(``, `provisioner "shell" { inline = ["uname -m"] }`), map[string]string{"base": armhf.Path, "out": "later"})
		if _, err := os.Stat(reg); err != nil {
			t.Errorf("the kept build's registration is gone after another armhf build: %v", err)
		}
		if out, err := exec.Command("chroot", m[1], "/bin/uname", "-m").CombinedOutput(); err != nil || string(out) != "armv7l\n" {
			t.Errorf("chroot %s /bin/uname -m: %v: %q", m[1], err, out)
		}
		if out, err := exec.Command("sh", "-c", c[1]).CombinedOutput(); err != nil || !strings.Contains(string(out), "removed binfmt_misc registration imagefactory-qemu-arm") {
			t.Errorf("%s: %v:\n%s", c[1], err, out)
		}
		fixture.CheckBinfmt(t, before)
		a.assertNoLeaks(t)
	})

	t.Run("cleanup", func(t *testing.T) {
		a := newAcc(t)
		a.BuildFlags = []string{"-on-error=cleanup"}
		res := a.Build(t, template(``, abortFailing), map[string]string{"base": disk.Path})
		if res.ExitCode == 0 {
			t.Fatalf("a failing provisioner built:\n%s", res.Output)
		}
		if strings.Contains(res.Output, "kept for inspection") || strings.Contains(res.Output, "reap --journal") {
			t.Errorf("-on-error=cleanup kept the build:\n%s", res.Output)
		}
		if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
			t.Errorf("output directory left after a failed build")
		}
		a.assertNoLeaks(t)
	})
}
