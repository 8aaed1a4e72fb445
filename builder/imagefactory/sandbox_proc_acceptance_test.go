package imagefactory_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// sandboxProvisioners: one build, every check of the chroot's namespaces
// (issue 18). The provisioners record what they see in /root; the first
// mounts a tmpfs inside and waits for the test, which checks the host's
// mount table meanwhile and mounts a tmpfs on the image's /home from the
// host (after the sandbox started); the chroot must see it come and go.
// The last leaves a daemon that ignores SIGTERM and holds a file of the
// image open, and one that keeps the provisioner's output pipes open.
const sandboxProvisioners = `
  provisioner "shell" {
    inline = [
      "cd /proc && for p in [0-9]*; do echo $p; done > /root/proc-pids",
      "tr '\\000' ' ' < /proc/1/cmdline > /root/proc-1",
      "ls -l /proc/self/fd",
      "grep ' /dev/mqueue ' /proc/mounts > /root/mqueue || true",
      "mount -t tmpfs factory-inner /mnt && echo inner > /mnt/inner && echo FACTORY-INNER-MOUNTED",
      "i=0; while [ ! -e /home/host-marker ] && [ $i -lt 180 ]; do sleep 1; i=$((i+1)); done",
      "cat /home/host-marker > /root/seen-host-mount; echo FACTORY-SAW-HOST",
      "i=0; while [ -e /home/host-marker ] && [ $i -lt 180 ]; do sleep 1; i=$((i+1)); done",
      "test -e /home/host-marker && echo still > /root/host-unmount-unseen || true",
    ]
  }
  provisioner "shell" {
    inline = [
      "setsid sh -c 'trap \"\" TERM; exec 3>/root/daemon-held; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &",
      "(trap '' TERM; exec sleep 1001) &",
      "echo FACTORY-DAEMON-STARTED",
    ]
  }
`

// TestAccSandboxProcesses: chroot commands run in the build's own mount,
// PID and IPC namespaces; what they leave is named and stopped.
func TestAccSandboxProcesses(t *testing.T) {
	a := newAcc(t)
	disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: debianTree})
	mnt := filepath.Join(a.Base, "mnt")
	run := a.Start(t, template(fmt.Sprintf("  mount_path = %q\n", mnt), sandboxProvisioners), map[string]string{"base": disk.Path})

	run.WaitForOutput(t, "FACTORY-INNER-MOUNTED", 3*time.Minute)
	if info := hostMountinfo(t); strings.Contains(info, "factory-inner") {
		t.Errorf("the provisioner's tmpfs on /mnt is in the host's mount table while the build runs")
	}
	if _, err := os.Stat(filepath.Join(mnt, "mnt/inner")); err == nil {
		t.Errorf("the file written on the chroot's tmpfs shows through the host's view of the image")
	}
	// A host mount made now, after the sandbox started, under the image.
	home := filepath.Join(mnt, "home")
	if err := unix.Mount("factory-outer", home, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(home, 0); err != nil {
				t.Errorf("unmount %s: %v", home, err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	if err := os.WriteFile(filepath.Join(home, "host-marker"), []byte("host mount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run.WaitForOutput(t, "FACTORY-SAW-HOST", time.Minute)
	unmount()
	res := run.Wait()
	if res.ExitCode != 0 {
		t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
	}

	img := filepath.Join(a.out(), "t.raw")
	root := disk.Root()
	t.Run("proc", func(t *testing.T) {
		pids := strings.Fields(readOut(t, img, root, "/root/proc-pids"))
		if len(pids) == 0 || pids[0] != "1" {
			t.Errorf("/proc in the chroot lists %v, want PID 1 first", pids)
		}
		// init, nsenter's child (the provisioner's shell) and its
		// children: a handful, not the host's hundreds.
		if len(pids) > 10 {
			t.Errorf("/proc in the chroot lists %d processes (the host's?): %v", len(pids), pids)
		}
		if got := readOut(t, img, root, "/root/proc-1"); !strings.Contains(got, "sandbox-init "+mnt) {
			t.Errorf("PID 1 in the chroot is %q, want the sandbox init", got)
		}
	})
	t.Run("mqueue", func(t *testing.T) {
		// The private /dev's mqueue directory, with the namespace's own
		// message queues mounted by init.
		if got := readOut(t, img, root, "/root/mqueue"); !strings.HasPrefix(got, "mqueue /dev/mqueue mqueue ") {
			t.Errorf("/proc/mounts in the chroot has %q on /dev/mqueue, want the namespace's mqueue", got)
		}
	})
	t.Run("fds", func(t *testing.T) {
		// ls -l /proc/self/fd: 0-2 (Packer's pipes) and ls's own
		// directory; nothing else of the host.
		lines := regexp.MustCompile(`(?m)\s(\d+) -> (\S+)\s*$`).FindAllStringSubmatch(res.Output, -1)
		if len(lines) < 3 {
			t.Fatalf("no ls -l /proc/self/fd listing in the output:\n%s", res.Output)
		}
		for _, l := range lines {
			if n, _ := strconv.Atoi(l[1]); n > 2 && !regexp.MustCompile(`^/proc/\d+/fd$`).MatchString(l[2]) {
				t.Errorf("a chroot process holds descriptor %s -> %s", l[1], l[2])
			}
		}
	})
	t.Run("mounts", func(t *testing.T) {
		if got := readOut(t, img, root, "/root/seen-host-mount"); got != "host mount\n" {
			t.Errorf("the host's tmpfs mounted on the image's /home after the sandbox started, seen in the chroot: %q", got)
		}
		if fixture.FileExistsOnDisk(t, img, root.Offset, "/root/host-unmount-unseen") {
			t.Errorf("the host's unmount of the image's /home did not reach the chroot")
		}
		if fixture.FileExistsOnDisk(t, img, root.Offset, "/mnt/inner") {
			t.Errorf("the chroot's tmpfs on /mnt was written to the image")
		}
		if info := hostMountinfo(t); strings.Contains(info, "factory-inner") || strings.Contains(info, mnt) {
			t.Errorf("mounts left after the build:\n%s", info)
		}
	})
	t.Run("daemon", func(t *testing.T) {
		re := regexp.MustCompile(`Warning: stopping a process still running in the chroot: PID (\d+) \(PID (\d+) in the chroot\): sh -c trap "" TERM; exec 3>/root/daemon-held; .*, ran \d`)
		if !re.MatchString(res.Output) {
			t.Errorf("the build does not name the daemon it stopped (PID, command, time):\n%s", res.Output)
		}
		// The second holds the provisioner's output pipes: the command
		// still ends (after the communicator's outputWait), with a
		// warning, and it is named and stopped like the first.
		if !strings.Contains(res.Output, "still holds its output") {
			t.Errorf("no warning about a process holding the command's output:\n%s", res.Output)
		}
		if !regexp.MustCompile(`Warning: stopping a process still running in the chroot: PID \d+ \(PID \d+ in the chroot\): sleep 1001, ran \d`).MatchString(res.Output) {
			t.Errorf("the build does not name the output-holding sleep it stopped:\n%s", res.Output)
		}
		for _, p := range rootedIn(mnt) {
			t.Errorf("process left: %s", p)
		}
		if !strings.Contains(res.Output, "Unmounted the image") {
			t.Errorf("the build did not report the unmount:\n%s", res.Output)
		}
	})
	a.assertNoLeaks(t)
}

// TestAccSandboxKilled: a kill -9 of the plugin during a provisioner's
// sleep ends the chroot's namespaces with it (their init dies with its
// parent, and the kernel kills the rest), before any reap; the next build
// reaps the mounts and the sandbox's cgroup, which nothing else removes.
func TestAccSandboxKilled(t *testing.T) {
	a := newAcc(t)
	disk := fixture.NewDisk(t, fixture.DiskOptions{Tree: debianTree})
	mnt := filepath.Join(a.Base, "mnt")
	tmpl := template(fmt.Sprintf("  mount_path = %q\n", mnt),
		`provisioner "shell" { inline = ["setsid sleep 300 </dev/null >/dev/null 2>&1 &", "echo FACTORY-SLEEPING", "sleep 300"] }`)
	earlier, _ := cleanup.LeftCgroups() // other tests' killed builds'
	killMidBuild(t, a, tmpl, map[string]string{"base": disk.Path, "out": "killed"})
	deadline := time.Now().Add(10 * time.Second)
	left := rootedIn(mnt)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		left = rootedIn(mnt)
	}
	for _, p := range left {
		t.Errorf("left running after the plugin's kill -9: %s", p)
	}
	cgs, err := cleanup.LeftCgroups()
	cgs = slices.DeleteFunc(cgs, func(c string) bool { return slices.Contains(earlier, c) })
	if err != nil || len(cgs) == 0 {
		t.Errorf("no sandbox cgroup left after the plugin's kill -9 (%v): the chroot ran without its device allow-list?", err)
	}
	res := a.Build(t, template(``, ``), map[string]string{"base": disk.Path})
	if res.ExitCode != 0 {
		t.Fatalf("the build after the kill failed:\n%s", res.Output)
	}
	for _, c := range cgs {
		if _, err := os.Stat(c); err == nil {
			t.Errorf("the killed build's sandbox cgroup %s is still there after the next build's reap", c)
		}
	}
	a.assertNoLeaks(t)
}

func hostMountinfo(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// rootedIn lists the processes on the host whose root is dir or below, or
// dir itself seen from the sandbox's mount namespace (the same directory),
// or that are the sandbox init of dir: "PID command".
func rootedIn(dir string) []string {
	var out []string
	var dirSt unix.Stat_t
	unix.Stat(dir, &dirSt)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cmd := strings.ReplaceAll(string(cmdline), "\x00", " ")
		r, _ := os.Readlink(filepath.Join("/proc", e.Name(), "root"))
		var st unix.Stat_t
		same := unix.Stat(filepath.Join("/proc", e.Name(), "root"), &st) == nil && st.Dev == dirSt.Dev && st.Ino == dirSt.Ino
		if r == dir || strings.HasPrefix(r, dir+"/") || same || strings.Contains(cmd, "sandbox-init "+dir) {
			out = append(out, e.Name()+" "+cmd)
		}
	}
	return out
}
