// Package sandbox holds what keeps chroot commands away from the build
// host. devfs.go: the private /dev of the chroot strategy, a tmpfs holding
// only the device nodes a build needs and this build's own loop devices.
package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Node is one device node of the private /dev.
type Node struct {
	Name         string // file name in /dev ("null", "loop5")
	Block        bool   // block device; else character device
	Major, Minor uint32
	Mode         uint32 // permission bits (0o666)
	GID          int    // owning group (the owner is root)
}

// Link is one symbolic link of the private /dev.
type Link struct {
	Name, Target string
}

// CharDevices are the character devices of the private /dev, as
// systemd-nspawn's copy_devnodes and mkosi's sandbox --dev make them (the
// first six; nspawn adds net/tun, which a build has no use for). Numbers:
// Linux Documentation/admin-guide/devices.txt (char major 1 "Memory
// devices": 3 null, 5 zero, 7 full, 8 random, 9 urandom; char major 5: 0
// /dev/tty, the current TTY). Modes and owners as devtmpfs makes them
// (drivers/char/mem.c devlist: 0666; drivers/tty/tty_io.c tty_devnode:
// 0666 for 5:0 and 5:2), root:root.
//
// /dev/console (5:1) is left out: nspawn binds a pseudo-terminal of its own
// over it (setup_dev_console), debootstrap's setup_devices_simple makes the
// host's 5:1, which would reach the build host's console. Chroot commands
// run on pipes, with no terminal to give them, so a program that writes to
// /dev/console gets ENOENT instead of writing on the host's.
var CharDevices = []Node{
	{Name: "null", Major: 1, Minor: 3, Mode: 0o666},
	{Name: "zero", Major: 1, Minor: 5, Mode: 0o666},
	{Name: "full", Major: 1, Minor: 7, Mode: 0o666},
	{Name: "random", Major: 1, Minor: 8, Mode: 0o666},
	{Name: "urandom", Major: 1, Minor: 9, Mode: 0o666},
	{Name: "tty", Major: 5, Minor: 0, Mode: 0o666},
}

// Links are the private /dev's symbolic links (nspawn, mkosi's sandbox and
// debootstrap's setup_devices_simple make the same): ptmx to the devpts
// instance mounted on /dev/pts (newinstance; Documentation/filesystems/
// devpts.rst), fd and the standard streams to /proc/self/fd. /dev/core ->
// /proc/kcore is left out: the host kernel's memory is no build's business.
var Links = []Link{
	{Name: "ptmx", Target: "pts/ptmx"},
	{Name: "fd", Target: "/proc/self/fd"},
	{Name: "stdin", Target: "/proc/self/fd/0"},
	{Name: "stdout", Target: "/proc/self/fd/1"},
	{Name: "stderr", Target: "/proc/self/fd/2"},
}

// Dirs are the private /dev's empty directories that nothing mounts on
// the host: mqueue, where the chroot's namespace init mounts its own IPC
// namespace's message queues (init.go; nspawn and mkosi's sandbox mount
// mqueue there too). /dev/pts and /dev/shm are made by their mounts.
var Dirs = []string{"mqueue"}

// DiskGID is the gid of group "disk" when the image's /etc/group does not
// say: 6 on Debian, Ubuntu, Fedora, RHEL, SUSE, Arch and Alpine (their
// base-passwd, setup, system-group-hardware, filesystem and alpine-baselayout
// packages).
const DiskGID = 6

// BlockNode is the node of the block device with device number rdev
// (unix.Mkdev's packing) named name in /dev, mode 0660 and group gid, as
// udev's 50-udev-default.rules gives disks (GROUP="disk", MODE="0660").
func BlockNode(name string, rdev uint64, gid int) (Node, error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return Node{}, fmt.Errorf("block device name %q: want a plain file name such as loop5", name)
	}
	return Node{Name: name, Block: true, Major: unix.Major(rdev), Minor: unix.Minor(rdev), Mode: 0o660, GID: gid}, nil
}

// GroupID is the gid of group name in an /etc/group file's content
// (group(5): name:password:GID:members), or fallback when it has no such
// group or the file is nil.
func GroupID(etcGroup []byte, name string, fallback int) int {
	for _, line := range bytes.Split(etcGroup, []byte("\n")) {
		f := strings.Split(string(line), ":")
		if len(f) < 3 || f[0] != name {
			continue
		}
		if gid, err := strconv.Atoi(f[2]); err == nil && gid >= 0 {
			return gid
		}
	}
	return fallback
}

// Populate makes nodes, links and the empty directories dirs in dir, an fd (O_PATH is enough) on the
// root of the freshly mounted, empty tmpfs of a private /dev. Each node
// gets exactly its Mode (the umask does not apply) and is owned by
// root:GID. A name that exists already is an error (the tmpfs is not
// fresh); so is anything mknod(2) refuses.
func Populate(dir *os.File, nodes []Node, links []Link, dirs []string) error {
	dfd := int(dir.Fd())
	for _, n := range nodes {
		typ := uint32(unix.S_IFCHR)
		if n.Block {
			typ = unix.S_IFBLK
		}
		if err := unix.Mknodat(dfd, n.Name, typ|n.Mode&0o777, int(unix.Mkdev(n.Major, n.Minor))); err != nil {
			return fmt.Errorf("private /dev: mknod %s (%s %d:%d): %w", n.Name, kind(n), n.Major, n.Minor, err)
		}
		if err := unix.Fchmodat(dfd, n.Name, n.Mode&0o777, 0); err != nil {
			return fmt.Errorf("private /dev: chmod %s: %w", n.Name, err)
		}
		if err := unix.Fchownat(dfd, n.Name, 0, n.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("private /dev: chown %s: %w", n.Name, err)
		}
	}
	for _, l := range links {
		if err := unix.Symlinkat(l.Target, dfd, l.Name); err != nil {
			return fmt.Errorf("private /dev: symlink %s -> %s: %w", l.Name, l.Target, err)
		}
	}
	for _, d := range dirs {
		if err := unix.Mkdirat(dfd, d, 0o755); err != nil {
			return fmt.Errorf("private /dev: mkdir %s: %w", d, err)
		}
		if err := unix.Fchmodat(dfd, d, 0o755, 0); err != nil {
			return fmt.Errorf("private /dev: chmod %s: %w", d, err)
		}
	}
	return nil
}

func kind(n Node) string {
	if n.Block {
		return "block"
	}
	return "char"
}

// LoopNodes are the block nodes of loop devices held by this build: devs
// maps a device's path (/dev/loop5) to its device number (loop.Device's
// Rdev), group gid. Sorted by name.
func LoopNodes(devs map[string]uint64, gid int) ([]Node, error) {
	var out []Node
	for p, rdev := range devs {
		if path.Dir(p) != "/dev" {
			return nil, fmt.Errorf("private /dev: loop device %s is not in /dev", p)
		}
		n, err := BlockNode(path.Base(p), rdev, gid)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
