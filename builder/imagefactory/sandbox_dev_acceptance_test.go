package imagefactory_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// shmProgram creates a POSIX shared memory segment (shm_open + mmap) and a
// named semaphore (sem_open) called argv[2], as uid argv[1] (setuid when
// not 0), and checks that a forked child sees the segment and posts the
// semaphore. It leaves both in /dev/shm, so the test can see where they
// landed. Static: it needs nothing from the image.
const shmProgram = `#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
	if (argc != 3) { fprintf(stderr, "usage: %s UID NAME\n", argv[0]); return 2; }
	uid_t uid = (uid_t)atoi(argv[1]);
	if (uid != 0 && (setgid(uid) != 0 || setuid(uid) != 0)) { perror("setuid"); return 2; }
	char name[128];
	snprintf(name, sizeof name, "/%s", argv[2]);
	int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
	if (fd < 0) { perror("shm_open"); return 1; }
	if (ftruncate(fd, 4096) != 0) { perror("ftruncate"); return 1; }
	char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) { perror("mmap"); return 1; }
	strcpy(p, "ping");
	sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
	if (s == SEM_FAILED) { perror("sem_open"); return 1; }
	pid_t c = fork();
	if (c < 0) { perror("fork"); return 1; }
	if (c == 0) {
		if (strcmp(p, "ping") == 0) strcpy(p, "pong");
		sem_post(s);
		_exit(0);
	}
	if (sem_wait(s) != 0) { perror("sem_wait"); return 1; }
	waitpid(c, NULL, 0);
	if (strcmp(p, "pong") != 0) { fprintf(stderr, "shared memory not shared: %s\n", p); return 1; }
	printf("SHM-OK uid=%d name=%s\n", (int)getuid(), argv[2]);
	return 0;
}
`

// buildShmProgram compiles shmProgram statically with the host's gcc.
func buildShmProgram(t *testing.T) string {
	t.Helper()
	return buildStaticC(t, "shm", shmProgram, "-pthread")
}

// buildStaticC compiles the C program src statically with the host's gcc
// (extra: more flags) and returns the binary's path, named name.
func buildStaticC(t *testing.T, name, src string, extra ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skipf("needs gcc to build the %s test program", name)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, name+".c")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	args := append(append([]string{"-static"}, extra...), "-O1", "-o", bin, file)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static: %v\n%s", err, out)
	}
	return bin
}

// devtmpfsNames are the paths of the kernel's devtmpfs that contain
// token.
func devtmpfsNames(t *testing.T, token string) []string {
	var out []string
	for p := range fixture.Devtmpfs(t) {
		if strings.Contains(p, token) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// hostShmNames are the files of the host's /dev/shm that contain token.
func hostShmNames(t *testing.T, token string) []string {
	entries, err := os.ReadDir("/dev/shm")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), token) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestAccSandboxDev: one build on a Debian tree checks the chroot's
// private /dev from inside: POSIX shared memory and named semaphores work
// as root and as nobody; `ls /dev` shows the build's loop device and no
// block device of the host; findmnt / and Debian's grub-probe name the
// root's loop device and blkid reads its label through the private node; a block node in the
// image with the host disk's number does not open (nodev). Afterwards
// neither the kernel's devtmpfs (a fresh view mounted by the test) nor the
// host's /dev/shm holds anything the build wrote in /dev or /dev/shm. The
// control build binds the host's /dev (chroot_mounts) and writes a marker
// that the same check finds: the check can fail.
func TestAccSandboxDev(t *testing.T) {
	a := newAcc(t)
	shm := buildShmProgram(t)
	hostDiskName, hostDisk := fixture.HostDisk(t)
	token := fmt.Sprintf("imagefactory-devfs-%d", os.Getpid())
	if left := devtmpfsNames(t, token); len(left) > 0 {
		t.Fatalf("the devtmpfs holds %q before the build", left)
	}
	disk := fixture.DebianMinbaseDisk(t)
	// A node of the host disk shipped in the image (made here: in the
	// chroot, the device allow-list refuses the mknod itself, see
	// TestAccSandboxEscape).
	fixture.WithReadWriteMount(t, disk.Path, disk.Root(), func(dir string) {
		if err := unix.Mknod(filepath.Join(dir, "root/hostile"), unix.S_IFBLK|0o600, int(hostDisk)); err != nil {
			t.Fatal(err)
		}
	})
	// Debian's own grub-probe (grub-common; libdevmapper, which the tree
	// lacks), unpacked in the chroot's /tmp for the build only.
	grubDebs := []string{fixture.DebianDeb(t, "grub-common"), fixture.DebianDeb(t, "libdevmapper1.02.1")}
	res := mustBuild(t, a, template("", fmt.Sprintf(`
  provisioner "file" {
    source      = %[1]q
    destination = "/tmp/shm-test"
  }
  provisioner "file" {
    source      = %[3]q
    destination = "/tmp/grub-common.deb"
  }
  provisioner "file" {
    source      = %[4]q
    destination = "/tmp/libdevmapper.deb"
  }
  provisioner "shell" {
    inline = [
      "chmod 755 /tmp/shm-test",
      "/tmp/shm-test 0 %[2]s-root",
      "/tmp/shm-test 65534 %[2]s-nobody",
      "echo SHM-LS: $(ls /dev/shm)",
      "echo marker > /dev/%[2]s-dev",
      "echo DEV-LS: $(ls /dev)",
      "echo ROOT-SOURCE: $(findmnt -no SOURCE /)",
      "echo ROOT-LABEL: $(blkid -s LABEL -o value $(findmnt -no SOURCE /))",
      "mkdir /tmp/gp && dpkg-deb -x /tmp/grub-common.deb /tmp/gp && dpkg-deb -x /tmp/libdevmapper.deb /tmp/gp",
      "echo GRUB-PROBE: $(LD_LIBRARY_PATH=$(dirname $(find /tmp/gp -name 'libdevmapper.so*' | head -n1)) /tmp/gp/usr/sbin/grub-probe --target=device / 2>&1)",
      "rm -rf /tmp/gp /tmp/grub-common.deb /tmp/libdevmapper.deb",
      "if head -c1 /root/hostile >/dev/null 2>/root/hostile.err; then echo HOSTILE-OPENED; else echo HOSTILE-REFUSED: $(cat /root/hostile.err); fi",
      "rm -f /root/hostile /root/hostile.err /tmp/shm-test",
      "su -s /bin/sh nobody -c 'echo nobody > /dev/null && echo NOBODY-DEV-NULL-OK'",
    ]
  }
`, shm, token, grubDebs[0], grubDebs[1])), map[string]string{"base": disk.Path})
	out := res.Output
	line := func(prefix string) string {
		m := regexp.MustCompile(`(?m)` + regexp.QuoteMeta(prefix) + `(.*)$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("the output has no %q line:\n%s", prefix, out)
			return ""
		}
		return strings.TrimSpace(m[1])
	}

	for _, want := range []string{"SHM-OK uid=0 name=" + token + "-root", "SHM-OK uid=65534 name=" + token + "-nobody", "NOBODY-DEV-NULL-OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output does not say %q:\n%s", want, out)
		}
	}
	shmLS := strings.Fields(line("SHM-LS:"))
	for _, want := range []string{token + "-root", "sem." + token + "-root", token + "-nobody", "sem." + token + "-nobody"} {
		if !slices.Contains(shmLS, want) {
			t.Errorf("/dev/shm in the chroot holds %q, not %s", shmLS, want)
		}
	}

	// The root's loop device is in the private /dev, and it is the only
	// block device there: none of the host's, none of another build's.
	source := line("ROOT-SOURCE:")
	if !regexp.MustCompile(`^/dev/loop\d+$`).MatchString(source) {
		t.Errorf("findmnt / in the chroot: %q, want the root's loop device", source)
	}
	if got := line("GRUB-PROBE:"); got != source {
		t.Errorf("grub-probe --target=device / in the chroot: %q, want %s", got, source)
	}
	if got := line("ROOT-LABEL:"); got != fixture.DefaultRootLabel {
		t.Errorf("blkid of %s in the chroot: label %q, want %q", source, got, fixture.DefaultRootLabel)
	}
	devLS := strings.Fields(line("DEV-LS:"))
	if !slices.Contains(devLS, filepath.Base(source)) {
		t.Errorf("ls /dev in the chroot does not show the build's %s: %q", source, devLS)
	}
	hostBlock, err := os.ReadDir("/sys/class/block")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range hostBlock {
		if b.Name() != filepath.Base(source) && slices.Contains(devLS, b.Name()) {
			t.Errorf("ls /dev in the chroot shows the host's block device %s: %q", b.Name(), devLS)
		}
	}
	if slices.Contains(devLS, hostDiskName) || slices.Contains(devLS, "loop-control") {
		t.Errorf("ls /dev in the chroot: %q", devLS)
	}
	// Refused by nodev (EACCES, "Permission denied"), not by the host's
	// device cgroup (EPERM), which may refuse the host disk anyway.
	if got := line("HOSTILE-"); !strings.HasPrefix(got, "REFUSED:") || !strings.Contains(got, "Permission denied") {
		t.Errorf("the image's node of the host disk %s: %q, want refused with Permission denied", hostDiskName, got)
	}

	// Nothing the build wrote in /dev or /dev/shm reached the host.
	if left := devtmpfsNames(t, token); len(left) > 0 {
		t.Errorf("the kernel's devtmpfs holds what the build wrote: %q", left)
	}
	if left := hostShmNames(t, token); len(left) > 0 {
		t.Errorf("the host's /dev/shm holds what the build wrote: %q", left)
	}
	a.assertNoLeaks(t)

	// The control: the host's /dev bound in on request; a marker written
	// there lands in the devtmpfs, and the check sees it.
	t.Run("host-dev-control", func(t *testing.T) {
		a := newAcc(t)
		marker := token + "-control"
		t.Cleanup(func() { fixture.RemoveFromDevtmpfs(t, marker) })
		small := fixture.NewDisk(t, fixture.DiskOptions{})
		mustBuild(t, a, template(`  chroot_mounts = [["bind", "/dev", "/dev"]]`, fmt.Sprintf(`
  provisioner "shell" { inline = ["echo marker > /dev/%s"] }
`, marker)), map[string]string{"base": small.Path})
		if left := devtmpfsNames(t, token); !slices.Equal(left, []string{marker}) {
			t.Errorf("the devtmpfs holds %q after a build that wrote %s into the host's /dev, want exactly it", left, marker)
		}
		fixture.RemoveFromDevtmpfs(t, marker)
		if left := devtmpfsNames(t, token); len(left) > 0 {
			t.Errorf("the marker was not removed: %q", left)
		}
		a.assertNoLeaks(t)
	})
}
