// Package binfmt makes binaries of a foreign architecture runnable in a
// chroot on this host: the kernel's binfmt_misc hands them to qemu-user
// (Documentation/admin-guide/binfmt-misc.rst in the kernel's source).
//
// The F (fix-binary) flag makes the kernel open the interpreter when it is
// registered, so it runs inside any chroot without a copy of it in the
// image. Enable uses a registration of the host's own when it has F and
// matches the architecture; otherwise it registers qemu-user-static's
// interpreter under a name of ours for the build's life, shared with the
// other builds that run at the same time (internal/cleanup's binfmt shares).
package binfmt

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"golang.org/x/sys/unix"
)

// format is the binfmt_misc magic and mask of one qemu-user target, from
// qemu's scripts/qemu-binfmt-conf.sh (the ${cpu}_magic and ${cpu}_mask
// variables; Debian's qemu-user-static generates /usr/lib/binfmt.d from
// the same script): the ELF identification (class, byte order, version)
// and e_machine, with e_type masked to accept ET_EXEC and ET_DYN.
type format struct{ magic, mask string }

var formats = map[string]format{
	"aarch64": {
		`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00`,
		`\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`,
	},
	"arm": {
		`\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00`,
		`\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`,
	},
	"riscv64": {
		`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00`,
		`\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`,
	},
	"ppc64le": {
		`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00`,
		`\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00`,
	},
	"s390x": {
		`\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16`,
		`\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff`,
	},
	"i386": {
		`\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00`,
		`\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`,
	},
	"x86_64": {
		`\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00`,
		`\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`,
	},
}

// Flags of our registrations: those of Debian's qemu-user-static
// (/usr/lib/binfmt.d/qemu-*.conf): O (the kernel opens the binary and
// passes its fd, so unreadable binaries run), P (argv[0] preserved: qemu
// reads AT_FLAGS_PRESERVE_ARGV0, so busybox applets and `exec -a` work),
// F (the interpreter is opened now and used from any chroot).
const Flags = "OPF"

// DefaultInterpreterDir is where qemu-user-static installs
// qemu-ARCH-static.
const DefaultInterpreterDir = "/usr/bin"

// interpreterDirEnv moves the interpreters elsewhere, for tests only (a
// host "without" qemu-user-static).
const interpreterDirEnv = "IMAGEFACTORY_TEST_QEMU_USER_DIR"

// Interpreter is the path of qemu-user-static's interpreter for a
// (/usr/bin/qemu-aarch64-static), "" when qemu has none.
func Interpreter(a arch.Arch) string {
	q := a.QEMU()
	if q == "" {
		return ""
	}
	dir := DefaultInterpreterDir
	if d := os.Getenv(interpreterDirEnv); d != "" {
		dir = d
	}
	return filepath.Join(dir, "qemu-"+q+"-static")
}

// Name is the binfmt_misc name Enable registers for a:
// imagefactory-qemu-aarch64. armhf and armel share qemu-arm's.
func Name(a arch.Arch) string { return cleanup.BinfmtPrefix + "qemu-" + a.QEMU() }

// Registration is one entry of binfmt_misc, as its file reads.
type Registration struct {
	Name        string
	Enabled     bool
	Interpreter string
	Flags       string
	Offset      int
	Magic, Mask []byte // Mask is all 0xff when the entry has none
	Extension   string // for E (extension) entries
}

// Registrations reads every entry of binfmt_misc; nil when it is not
// mounted.
func Registrations() ([]Registration, error) {
	if !cleanup.BinfmtMounted() {
		return nil, nil
	}
	ents, err := os.ReadDir(cleanup.BinfmtMisc)
	if err != nil {
		return nil, fmt.Errorf("binfmt: %w", err)
	}
	var out []Registration
	for _, e := range ents {
		if n := e.Name(); n == "register" || n == "status" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(cleanup.BinfmtMisc, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("binfmt: %w", err)
		}
		out = append(out, parse(e.Name(), b))
	}
	return out, nil
}

// parse reads an entry file (fs/binfmt_misc.c, bm_entry_read): "enabled",
// "interpreter PATH", "flags: OPF", then "offset N", "magic HEX", "mask
// HEX" or "extension .EXT".
func parse(name string, b []byte) Registration {
	r := Registration{Name: name}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "enabled":
			r.Enabled = true
		case "interpreter":
			r.Interpreter = v
		case "flags:":
			r.Flags = v
		case "offset":
			fmt.Sscan(v, &r.Offset)
		case "magic":
			r.Magic, _ = hex.DecodeString(v)
		case "mask":
			r.Mask, _ = hex.DecodeString(v)
		case "extension":
			r.Extension = v
		}
	}
	if r.Mask == nil && r.Magic != nil {
		r.Mask = bytes.Repeat([]byte{0xff}, len(r.Magic))
	}
	return r
}

// Matches reports whether the kernel would hand ELF executables and
// shared objects of a to r: the ELF header of both kinds (e_type ET_EXEC
// and ET_DYN) masked by r's mask equals r's magic.
func (r Registration) Matches(a arch.Arch) bool {
	f, ok := formats[a.QEMU()]
	if !ok || !r.Enabled || r.Magic == nil || len(r.Mask) != len(r.Magic) {
		return false
	}
	hdr := unescape(f.magic)
	for _, etype := range []byte{2, 3} {
		h := append([]byte(nil), hdr...)
		h[16+int(h[5]-1)] = etype // e_type's low byte: first in little-endian, second in big
		if r.Offset+len(r.Magic) > len(h) {
			return false
		}
		for i := range r.Magic {
			if h[r.Offset+i]&r.Mask[i] != r.Magic[i]&r.Mask[i] {
				return false
			}
		}
	}
	return true
}

// Fixed reports whether r has the F flag: usable from a chroot.
func (r Registration) Fixed() bool { return strings.Contains(r.Flags, "F") }

// unescape decodes the \xHH escapes of a magic or mask string.
func unescape(s string) []byte {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if b, err := hex.DecodeString(s[i+2 : i+4]); err == nil {
				out = append(out, b[0])
				i += 3
				continue
			}
		}
		out = append(out, s[i])
	}
	return out
}

// ErrNoInterpreter is Enable's error when the host lacks qemu-user-static.
var ErrNoInterpreter = errors.New("no qemu-user interpreter")

// Enable makes binaries of a runnable in a chroot on this host, and
// returns how (for the UI) and release, which undoes exactly what Enable
// did; call it once, after the last process in the chroot has exited.
//
//   - a native to the host (arch.Arch.Native): nothing to do.
//   - the host has an enabled registration with the F flag that matches a:
//     it is used as it is, and release does nothing.
//   - otherwise, under the host-wide lock (cleanup.LockBinfmt): a share is
//     journaled in j, binfmt_misc is mounted if it is not (journaled too:
//     cleanup.MarkBinfmtMount), and Name(a) is registered with
//     Interpreter(a) and Flags unless another build registered it already.
//     release (or the reaper after a SIGKILL) drops the share; the last
//     share out removes the registration and the mount.
//
// Errors: an architecture qemu-user cannot emulate; ErrNoInterpreter,
// naming Debian's qemu-user-static, when Interpreter(a) is missing;
// mount(2) or register failures. On error nothing is left.
func Enable(j *cleanup.Journal, a arch.Arch) (release func() error, how string, err error) {
	nothing := func() error { return nil }
	if a.Native() {
		return nothing, fmt.Sprintf("%s runs natively on this %s host", a, arch.Host()), nil
	}
	f, ok := formats[a.QEMU()]
	if !ok {
		return nil, "", fmt.Errorf("binfmt: no qemu-user emulator for architecture %q", a)
	}
	unlock, err := cleanup.LockBinfmt()
	if err != nil {
		return nil, "", err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	regs, err := Registrations()
	if err != nil {
		return nil, "", err
	}
	name := Name(a)
	var ours *Registration
	for i, r := range regs {
		if r.Name == name {
			ours = &regs[i]
			continue
		}
		if r.Fixed() && r.Matches(a) {
			return nothing, fmt.Sprintf("the host's binfmt_misc registration %s (interpreter %s, flags %s)", r.Name, r.Interpreter, r.Flags), nil
		}
	}
	interp := Interpreter(a)
	if _, err := os.Stat(interp); err != nil {
		return nil, "", fmt.Errorf("%w for %s: %s is missing and binfmt_misc has no registration for %s with the F flag; install Debian's package qemu-user-static (apt-get install qemu-user-static)", ErrNoInterpreter, a, interp, a)
	}
	h, err := j.TakeBinfmt(name)
	if err != nil {
		if h != 0 {
			unlock()
			locked = false
			err = errors.Join(err, j.Release(h))
		}
		return nil, "", err
	}
	undo := func(err error) (func() error, string, error) {
		unlock()
		locked = false
		return nil, "", errors.Join(err, j.Release(h))
	}
	var did []string
	if !cleanup.BinfmtMounted() {
		if err := cleanup.MarkBinfmtMount(); err != nil {
			return undo(fmt.Errorf("binfmt: %w", err))
		}
		if err := unix.Mount("binfmt_misc", cleanup.BinfmtMisc, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			hint := ""
			if errors.Is(err, unix.ENODEV) {
				hint = " (the kernel has no binfmt_misc: modprobe binfmt_misc)"
			}
			return undo(fmt.Errorf("binfmt: mounting binfmt_misc on %s: %w%s", cleanup.BinfmtMisc, err, hint))
		}
		did = append(did, "mounted binfmt_misc")
	}
	if ours == nil {
		// One write(2) per registration (binfmt-misc.rst): name, type M,
		// offset, magic, mask, interpreter, flags.
		reg := fmt.Sprintf(":%s:M::%s:%s:%s:%s", name, f.magic, f.mask, interp, Flags)
		if err := os.WriteFile(filepath.Join(cleanup.BinfmtMisc, "register"), []byte(reg), 0); err != nil {
			return undo(fmt.Errorf("binfmt: registering %s for %s: %w", interp, a, err))
		}
		did = append(did, fmt.Sprintf("registered %s (interpreter %s, flags %s)", name, interp, Flags))
	} else {
		did = append(did, fmt.Sprintf("shared registration %s with another build (interpreter %s, flags %s)", name, ours.Interpreter, ours.Flags))
	}
	unlock()
	locked = false
	return func() error { return j.Release(h) }, strings.Join(did, "; "), nil
}
