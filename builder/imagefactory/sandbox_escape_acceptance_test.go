package imagefactory_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// escapeProgram is what a hostile maintainer script running as root
// would try. "escape fd|cwd MARKER" leaves a chroot as chroot(2)'s NOTES
// tell (chroot into a subdirectory, so that the root is no longer an
// ancestor of the working directory: either kept there (cwd) or brought
// back with fchdir to a descriptor of the old root (fd); then ".." up to
// the top and chroot there) and says whether the host file MARKER is
// then in sight. "open PATH" opens a node and reads a byte. Static: it
// needs nothing from the image.
const escapeProgram = `#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
	if (argc == 3 && strcmp(argv[1], "open") == 0) {
		char c;
		int fd = open(argv[2], O_RDONLY);
		if (fd < 0 || read(fd, &c, 1) != 1) { printf("REFUSED %s: %s\n", argv[2], strerror(errno)); return 0; }
		printf("OPENED %s\n", argv[2]);
		return 0;
	}
	if (argc != 4 || strcmp(argv[1], "escape") != 0) { fprintf(stderr, "usage: %s escape fd|cwd MARKER | open PATH\n", argv[0]); return 2; }
	int top = open("/", O_RDONLY | O_DIRECTORY);
	mkdir("/escape-dir", 0700);
	if (strcmp(argv[2], "cwd") == 0) {
		if (chdir("/") != 0 || chroot("/escape-dir") != 0) { perror("chroot"); return 2; }
	} else {
		if (chroot("/escape-dir") != 0 || chdir("/") != 0 || fchdir(top) != 0) { perror("chroot/fchdir"); return 2; }
	}
	for (int i = 0; i < 64; i++) chdir("..");
	if (chroot(".") != 0) { perror("chroot ."); return 2; }
	struct stat st;
	printf("%s-%s\n", stat(argv[3], &st) == 0 ? "ESCAPED" : "CONTAINED", argv[2]);
	return 0;
}
`

// TestAccSandboxEscape: a provisioner running as root in the chroot
// tries to leave it and to reach the host's disks, in one build.
//   - The classic chroot escapes (escapeProgram, both ways) do not see a
//     host-only marker file: the sandbox's root is the root of its mount
//     namespace (pivot_root), with nothing of the host's tree above it.
//   - A node of the host root disk's numbers, or of those of a loop device
//     the test attached outside the build, cannot be made in the private
//     /dev, nor opened (EPERM: the device cgroup); the host disk's node in
//     a devtmpfs it mounts itself does not open either.
//   - The build's own loop device still opens, and so does a host device
//     chroot_mounts binds in on purpose (another loop device of the test's).
//   - Afterwards no sandbox cgroup, process, mount or loop device is left.
func TestAccSandboxEscape(t *testing.T) {
	a := newAcc(t)
	prog := buildStaticC(t, "escape", escapeProgram)
	hostDiskName, hostDisk := fixture.HostDisk(t)
	testLoop, testLoopRdev := fixture.AttachedLoop(t)
	boundLoop, _ := fixture.AttachedLoop(t)
	marker := filepath.Join(t.TempDir(), "host-only-marker")
	if err := os.WriteFile(marker, []byte("host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	disk := fixture.NewDisk(t, fixture.DiskOptions{})
	res := mustBuild(t, a, template(fmt.Sprintf(`  chroot_mounts = [["bind", %q, "/dev/bound-loop"]]`, boundLoop), fmt.Sprintf(`
  provisioner "file" {
    source      = %[1]q
    destination = "/root/escape"
  }
  provisioner "shell" {
    inline = [
      "chmod 755 /root/escape",
      "/root/escape escape cwd %[2]s; rmdir /escape-dir",
      "/root/escape escape fd %[2]s; rmdir /escape-dir",
      "mknod /dev/host-disk b %[3]d %[4]d && /root/escape open /dev/host-disk; rm -f /dev/host-disk",
      "mknod /dev/test-loop b %[5]d %[6]d && /root/escape open /dev/test-loop; rm -f /dev/test-loop",
      "mkdir /root/devtmpfs && mount -t devtmpfs devtmpfs /root/devtmpfs && /root/escape open /root/devtmpfs/%[7]s; umount /root/devtmpfs; rmdir /root/devtmpfs",
      "/root/escape open $(awk '$2 == \"/\" { print $1 }' /proc/mounts)",
      "/root/escape open /dev/bound-loop",
      "rm -f /root/escape",
    ]
  }
`, prog, marker, unix.Major(hostDisk), unix.Minor(hostDisk), unix.Major(testLoopRdev), unix.Minor(testLoopRdev), hostDiskName)),
		map[string]string{"base": disk.Path})
	out := res.Output

	for _, way := range []string{"cwd", "fd"} {
		if !strings.Contains(out, "CONTAINED-"+way) || strings.Contains(out, "ESCAPED-"+way) {
			t.Errorf("the chroot escape by %s: the output does not say CONTAINED-%s:\n%s", way, way, out)
		}
	}
	// The mknod itself is refused (the filter sees mknod(2) too), or
	// else the open.
	refused := func(what, node string) {
		m := regexp.MustCompile(`(?m)(mknod: |OPENED |REFUSED )`+regexp.QuoteMeta(node)+`(.*)$`).FindAllStringSubmatch(out, -1)
		if len(m) != 1 || m[0][1] == "OPENED " || !strings.Contains(m[0][2], "Operation not permitted") {
			t.Errorf("%s's node %s in the chroot: %q, want refused with Operation not permitted:\n%s", what, node, m, out)
		}
	}
	refused("the host disk "+hostDiskName, "/dev/host-disk")
	refused("the test's loop device "+testLoop, "/dev/test-loop")
	refused("the host disk "+hostDiskName+" in a devtmpfs", "/root/devtmpfs/"+hostDiskName)
	if !regexp.MustCompile(`OPENED /dev/loop\d+`).MatchString(out) {
		t.Errorf("the build's own loop device did not open in the chroot:\n%s", out)
	}
	if !strings.Contains(out, "OPENED /dev/bound-loop") {
		t.Errorf("the loop device %s bound in by chroot_mounts did not open in the chroot:\n%s", boundLoop, out)
	}
	a.assertNoLeaks(t)
}
