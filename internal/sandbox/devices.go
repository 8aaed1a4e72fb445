package sandbox

// devices.go: the device allow-list of the sandbox's processes. A root
// process in the chroot keeps CAP_MKNOD and CAP_SYS_ADMIN: it can mknod a
// host disk's numbers in the private /dev, or mount a devtmpfs. What stops
// it is the kernel's device cgroup check at open(2) and mknod(2), whatever
// filesystem holds the node: a BPF_PROG_TYPE_CGROUP_DEVICE program
// attached to a cgroup v2 cgroup the sandbox's processes live in, as
// container runtimes do (runc's libcontainer/cgroups/devices/devicefilter,
// crun, systemd's bpf-devices.c; the kernel's
// Documentation/admin-guide/cgroup-v2.rst, "Device controller").

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// Device is one device number, or a whole major (AnyMinor), that the
// sandbox's processes may open and mknod.
type Device struct {
	Block        bool
	Major, Minor uint32
	AnyMinor     bool
}

func (d Device) String() string {
	t, minor := "c", fmt.Sprint(d.Minor)
	if d.Block {
		t = "b"
	}
	if d.AnyMinor {
		minor = "*"
	}
	return fmt.Sprintf("%s %d:%s", t, d.Major, minor)
}

// AllowedDevices is the allow-list of a sandbox whose private /dev holds
// CharDevices and the block nodes blocks (this build's loop devices): their
// numbers, /dev/ptmx (char 5:2) and the pseudo-terminals of devpts (char
// 136-143:*, "Unix98 PTY slaves" in Linux
// Documentation/admin-guide/devices.txt). It is runc's default list
// (libcontainer/specconv AllowedDevices) less /dev/console (5:1, the
// host's console: see CharDevices) and net/tun (10:200).
func AllowedDevices(blocks []Node) []Device {
	var out []Device
	for _, n := range append(slices.Clone(CharDevices), blocks...) {
		out = append(out, Device{Block: n.Block, Major: n.Major, Minor: n.Minor})
	}
	out = append(out, Device{Major: 5, Minor: 2})
	for major := uint32(136); major <= 143; major++ {
		out = append(out, Device{Major: major, AnyMinor: true})
	}
	return out
}

// deviceFilter is the BPF program that allows allow and denies every
// other device: it returns 1 (allow) or 0 (EPERM). Its context is struct
// bpf_cgroup_dev_ctx (include/uapi/linux/bpf.h): access_type (u32 at 0:
// the BPF_DEVCG_DEV_* type in the low 16 bits, the BPF_DEVCG_ACC_* access
// in the high ones), major (at 4), minor (at 8). Every access (mknod,
// read, write) of a listed device is allowed.
func deviceFilter(allow []Device) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.And.Imm32(asm.R2, 0xffff),
		asm.LoadMem(asm.R4, asm.R1, 4, asm.Word),
		asm.LoadMem(asm.R5, asm.R1, 8, asm.Word),
	}
	for i, d := range allow {
		next := fmt.Sprintf("rule%d", i+1)
		typ := int32(unix.BPF_DEVCG_DEV_CHAR)
		if d.Block {
			typ = unix.BPF_DEVCG_DEV_BLOCK
		}
		rule := asm.Instructions{
			asm.JNE.Imm(asm.R2, typ, next),
			asm.JNE.Imm(asm.R4, int32(d.Major), next),
		}
		if !d.AnyMinor {
			rule = append(rule, asm.JNE.Imm(asm.R5, int32(d.Minor), next))
		}
		rule = append(rule, asm.Mov.Imm32(asm.R0, 1), asm.Return())
		if i > 0 {
			rule[0] = rule[0].WithSymbol(fmt.Sprintf("rule%d", i))
		}
		insns = append(insns, rule...)
	}
	deny := asm.Mov.Imm32(asm.R0, 0)
	if len(allow) > 0 {
		deny = deny.WithSymbol(fmt.Sprintf("rule%d", len(allow)))
	}
	return append(insns, deny, asm.Return())
}

// CgroupPrefix begins the name of every cgroup a sandbox makes; the
// journal's reaper removes only cgroups so named.
const CgroupPrefix = cleanup.CgroupPrefix

// innerCgroup is the child cgroup the sandbox's processes live in, and the
// root of their cgroup namespace (cleanup.CgroupInner). The filter is attached to its parent:
// a root process in the chroot, which sees only its namespace's root,
// cannot get a descriptor of the cgroup holding the program to detach it
// (BPF_PROG_DETACH wants one), nor move itself out (cgroup-v2.rst,
// "Namespace": writes to cgroup.procs outside the namespace's root fail).
const innerCgroup = cleanup.CgroupInner

// Cgroup is a sandbox's cgroup with its device filter attached.
type Cgroup struct {
	dir   string
	inner *os.File // the child cgroup the processes go to
}

// NewCgroup makes the cgroup dir (from cleanup.CgroupDir; journal it first) with
// the device filter of allow attached, and its child cgroup for the
// processes. The filter is attached without BPF_F_ALLOW_OVERRIDE or
// BPF_F_ALLOW_MULTI, so no descendant can attach one of its own. Errors
// name the step; on error nothing is left.
func NewCgroup(dir string, allow []Device) (c *Cgroup, err error) {
	if !strings.HasPrefix(filepath.Base(dir), CgroupPrefix) {
		return nil, fmt.Errorf("sandbox: cgroup %s: its name must begin with %s", dir, CgroupPrefix)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox: making cgroup %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			cleanup.RemoveCgroup(dir)
		}
	}()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.CGroupDevice,
		Instructions: deviceFilter(allow),
		License:      "none", // it calls no GPL-only helper
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: loading the device filter: %w", err)
	}
	defer prog.Close() // the attachment holds it
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: int(d.Fd()), Program: prog, Attach: ebpf.AttachCGroupDevice}); err != nil {
		return nil, fmt.Errorf("sandbox: attaching the device filter to cgroup %s: %w", dir, err)
	}
	inner := filepath.Join(dir, innerCgroup)
	if err := os.Mkdir(inner, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox: making cgroup %s: %w", inner, err)
	}
	f, err := os.OpenFile(inner, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return &Cgroup{dir: dir, inner: f}, nil
}

// Dir is the cgroup's path (the one the filter is attached to).
func (c *Cgroup) Dir() string { return c.dir }

// InnerDir is the child cgroup the sandbox's processes live in, under the
// filter: a process joins it by writing its PID to cgroup.procs there.
func (c *Cgroup) InnerDir() string { return filepath.Join(c.dir, innerCgroup) }

// FD is a descriptor of the cgroup the processes go to, for
// syscall.SysProcAttr's CgroupFD (clone3 CLONE_INTO_CGROUP: the child
// starts in it, with no window outside).
func (c *Cgroup) FD() int { return int(c.inner.Fd()) }

// Close closes the descriptor; the cgroup stays until cleanup.RemoveCgroup
// (the journal's CgroupEntry).
func (c *Cgroup) Close() error { return c.inner.Close() }
