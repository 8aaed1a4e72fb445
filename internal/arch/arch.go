// Package arch names CPU architectures the way Debian does (dpkg
// --print-architecture: amd64, arm64, armhf, ...) and reads an image's
// architecture from its own ELF binaries, never from its metadata: the
// binaries are what the CPU, or qemu-user, must run.
package arch

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// Arch is a Debian architecture name. The zero value is "unknown".
type Arch string

// Debian's names (the Debian Policy Manual, 11.1 "Architecture
// specification strings"; dpkg's data/cputable and ostable).
const (
	AMD64   Arch = "amd64"
	ARM64   Arch = "arm64"
	ARMHF   Arch = "armhf" // ARMv7, EABI5, hard-float
	ARMEL   Arch = "armel" // ARMv5TE+, EABI5, soft-float
	I386    Arch = "i386"
	RISCV64 Arch = "riscv64"
	PPC64EL Arch = "ppc64el"
	S390X   Arch = "s390x"
)

// Known lists the architectures this package names, for messages and
// option validation.
var Known = []Arch{AMD64, ARM64, ARMHF, ARMEL, I386, RISCV64, PPC64EL, S390X}

// Valid reports whether a is one of Known.
func (a Arch) Valid() bool {
	for _, k := range Known {
		if a == k {
			return true
		}
	}
	return false
}

// goarch maps Go's GOARCH to Debian's name. GOARCH=arm does not say the
// float ABI; Go builds for arm default to GOARM=7 hard-float on Linux
// distributions that are armhf, which is what a factory host would be.
var goarch = map[string]Arch{
	"amd64": AMD64, "arm64": ARM64, "arm": ARMHF, "386": I386,
	"riscv64": RISCV64, "ppc64le": PPC64EL, "s390x": S390X,
}

// Host is the architecture of this process, hence of the host userland
// that runs it; "" for a GOARCH this package does not name.
func Host() Arch { return goarch[runtime.GOARCH] }

// Native reports whether the host runs binaries of a without emulation:
// the same architecture, or i386 on amd64 (the x86-64 kernel's IA-32
// emulation, on in every distribution kernel).
func (a Arch) Native() bool {
	h := Host()
	return a == h || (h == AMD64 && a == I386)
}

// QEMU is qemu-user's name for a (the suffix of qemu-NAME-static, and of
// qemu's linux-user targets), or "" when qemu has no user-mode emulator
// for it. armhf and armel share qemu-arm: the float ABI is the binary's
// business, not the emulator's.
func (a Arch) QEMU() string {
	switch a {
	case AMD64:
		return "x86_64"
	case ARM64:
		return "aarch64"
	case ARMHF, ARMEL:
		return "arm"
	case I386:
		return "i386"
	case RISCV64:
		return "riscv64"
	case PPC64EL:
		return "ppc64le"
	case S390X:
		return "s390x"
	}
	return ""
}

// UnameMachine is what `uname -m` prints on a (or in qemu-user emulating
// it): aarch64, armv7l, ... "" when not known.
func (a Arch) UnameMachine() string {
	switch a {
	case AMD64:
		return "x86_64"
	case ARM64:
		return "aarch64"
	case ARMHF:
		return "armv7l"
	case ARMEL:
		return "armv5tel"
	case I386:
		return "i686"
	case RISCV64:
		return "riscv64"
	case PPC64EL:
		return "ppc64le"
	case S390X:
		return "s390x"
	}
	return ""
}

// ELF header flags of 32-bit ARM (the ARM ELF ABI, "ELF for the Arm
// Architecture", section 5.2 "ELF Header"; binutils include/elf/arm.h).
// debug/elf does not expose e_flags: it is read at offset 36 of the ELF32
// header (the gABI's Elf32_Ehdr).
const (
	efARMEABIMask     = 0xff000000
	efARMEABIVersion5 = 0x05000000
	efARMABIFloatHard = 0x00000400 // EF_ARM_ABI_FLOAT_HARD
	elf32FlagsOffset  = 36
	emRISCV           = 243 // EM_RISCV (the gABI's e_machine list)
)

// ErrUnknown wraps OfELF's error for a valid ELF object of an
// architecture this package does not name.
var ErrUnknown = errors.New("unknown architecture")

// OfELF reads an ELF object's architecture from its header: e_machine,
// EI_CLASS and EI_DATA, and for 32-bit ARM the EABI hard-float flag
// (EF_ARM_ABI_FLOAT_HARD in e_flags) that tells armhf from armel.
// Errors: not ELF (debug/elf's error), or ErrUnknown naming the machine,
// class and byte order (an object for MIPS, LoongArch, big-endian ARM...).
// The object may come from an image, so it is hostile: a malformed one is
// an error, never a panic.
func OfELF(r io.ReaderAt) (a Arch, err error) {
	defer malformed(&err)
	f, err := elf.NewFile(r)
	if err != nil {
		return "", err
	}
	defer f.Close()
	c64, le := f.Class == elf.ELFCLASS64, f.Data == elf.ELFDATA2LSB
	switch {
	case f.Machine == elf.EM_X86_64 && c64 && le:
		return AMD64, nil
	case f.Machine == elf.EM_386 && !c64 && le:
		return I386, nil
	case f.Machine == elf.EM_AARCH64 && c64 && le:
		return ARM64, nil
	case f.Machine == elf.EM_ARM && !c64 && le:
		var b [4]byte
		if _, err := r.ReadAt(b[:], elf32FlagsOffset); err != nil {
			return "", fmt.Errorf("reading e_flags: %w", err)
		}
		flags := f.ByteOrder.Uint32(b[:])
		if flags&efARMEABIMask == efARMEABIVersion5 && flags&efARMABIFloatHard != 0 {
			return ARMHF, nil
		}
		return ARMEL, nil
	case f.Machine == emRISCV && c64 && le:
		return RISCV64, nil
	case f.Machine == elf.EM_PPC64 && c64 && le:
		return PPC64EL, nil
	case f.Machine == elf.EM_S390 && c64 && !le:
		return S390X, nil
	}
	name := ""
	if n := f.Machine.String(); !strings.Contains(n, "+") { // debug/elf spells unassigned numbers "EM_X+N"
		name = " " + n
	}
	return "", fmt.Errorf("%w: e_machine %d%s, %v, %v (not one of %v, which this builder runs natively or under qemu-user)", ErrUnknown, uint16(f.Machine), name, f.Class, f.Data, Known)
}

// Shell is the file OfImage reads: every distribution has it, and it is
// what the chroot communicator runs first.
const Shell = "/bin/sh"

// OfImage reads the architecture of the image under root from its
// /bin/sh, symlinks followed inside the image (inroot: /bin/sh -> dash,
// /bin -> usr/bin, busybox links), and checks it against the dynamic
// loader /bin/sh names (PT_INTERP, such as /lib/ld-linux-armhf.so.3), when
// it names one: a static /bin/sh has none. Errors name the file read and
// where its links led: missing, not ELF, an unknown machine (ErrUnknown),
// or a loader of another architecture than /bin/sh.
func OfImage(root *inroot.Root) (Arch, error) {
	sh, a, interp, err := readELF(root, Shell)
	if err != nil {
		return "", err
	}
	if interp == "" {
		return a, nil
	}
	ld, la, _, err := readELF(root, interp)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s of the image (%s) is %s and names the dynamic loader %s, which the image does not have", Shell, sh, a, interp)
	}
	if err != nil {
		return "", fmt.Errorf("%s of the image (%s) names the dynamic loader %s: %w", Shell, sh, interp, err)
	}
	if la != a {
		return "", fmt.Errorf("%s of the image (%s) is %s but its dynamic loader %s (%s) is %s", Shell, sh, a, interp, ld, la)
	}
	return a, nil
}

// readELF opens name inside root and returns where it resolved to (for
// messages), its architecture and its PT_INTERP ("" for none).
func readELF(root *inroot.Root, name string) (real string, a Arch, interp string, err error) {
	f, err := root.Open(name)
	if err != nil {
		return name, "", "", fmt.Errorf("reading %s of the image: %w", name, err)
	}
	defer f.Close()
	real = name
	if p, err := root.PathOf(f); err == nil && p != name {
		real = name + " -> " + p
	}
	a, err = OfELF(f)
	if err != nil {
		return real, "", "", fmt.Errorf("%s of the image: %w", real, err)
	}
	interp, err = interpreter(f)
	if err != nil {
		return real, "", "", fmt.Errorf("%s of the image: %w", real, err)
	}
	return real, a, interp, nil
}

// malformed turns a panic of debug/elf on a hostile object into *err
// (deferred by the readers of an image's ELF objects; their other results
// are then ignored by callers, who check err first).
func malformed(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("malformed ELF object: %v", p)
	}
}

// interpreter returns the PT_INTERP path of an ELF object, "" for none.
func interpreter(r io.ReaderAt) (s string, err error) {
	defer malformed(&err)
	f, err := elf.NewFile(r)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		if p.Filesz > 4096 {
			return "", fmt.Errorf("PT_INTERP of %d bytes", p.Filesz)
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), int64(p.Filesz)))
		if err != nil {
			return "", fmt.Errorf("reading PT_INTERP: %w", err)
		}
		for len(b) > 0 && b[len(b)-1] == 0 {
			b = b[:len(b)-1]
		}
		return string(b), nil
	}
	return "", nil
}
