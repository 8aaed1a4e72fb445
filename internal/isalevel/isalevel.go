// Package isalevel finds the x86-64 micro-architecture level an image's
// userland needs: x86-64 baseline, x86-64-v2, v3 or v4, the levels of the
// x86-64 psABI (section 3.1.1, "Processor Architecture"). RHEL 9 and its
// rebuilds are built for v2, RHEL 10 and CentOS Stream 10 for v3, Debian,
// Ubuntu, Fedora and openSUSE for the baseline: a CPU below the level makes
// the guest's dynamic loader stop every program ("Fatal glibc error: CPU
// does not support x86-64-v2").
//
// The level is read from the image's glibc: since glibc 2.33,
// sysdeps/x86/isa-level.c marks libc.so.6 with a GNU property note,
// GNU_PROPERTY_X86_ISA_1_NEEDED, whose bits are the levels glibc was
// compiled for (`readelf -n libc.so.6`: "x86 ISA needed: x86-64-baseline,
// x86-64-v2"). It is the same mark glibc's loader checks.
package isalevel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// Level is an x86-64 micro-architecture level; Unknown when nothing says.
type Level int

const (
	Unknown  Level = iota
	Baseline       // x86-64: SSE2, CMOV, CX8
	V2             // + CX16, LAHF-SAHF, POPCNT, SSE3, SSE4.1, SSE4.2, SSSE3
	V3             // + AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, XSAVE
	V4             // + AVX512F, AVX512BW, AVX512CD, AVX512DQ, AVX512VL
)

func (l Level) String() string {
	switch l {
	case Baseline:
		return "x86-64-baseline"
	case V2, V3, V4:
		return fmt.Sprintf("x86-64-v%d", int(l))
	}
	return "unknown"
}

// ELF note and property numbers (binutils include/elf/common.h).
const (
	ntGNUPropertyType0 = 5
	// GNU_PROPERTY_X86_UINT32_OR_LO + 2. Bit 0 is the baseline, bit 1
	// v2, bit 2 v3, bit 3 v4.
	propX86ISA1Needed = 0xc0008002
)

// ErrNotX86_64 is FromELF's error for an ELF object of another
// architecture or class.
var ErrNotX86_64 = errors.New("not an x86-64 ELF object")

// FromELF returns the level a 64-bit x86 ELF object says it needs in its
// GNU property note: the highest level bit set, or Unknown when the object
// has no such note (glibc before 2.33, musl, Go binaries). Errors: not ELF,
// or ErrNotX86_64. The object comes from the image, so it is hostile: a
// malformed one is an error, never a panic.
func FromELF(r io.ReaderAt) (level Level, err error) {
	defer func() {
		if p := recover(); p != nil {
			level, err = Unknown, fmt.Errorf("malformed ELF object: %v", p)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return Unknown, err
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return Unknown, fmt.Errorf("%w (%s, %s)", ErrNotX86_64, f.Class, f.Machine)
	}
	var notes [][]byte
	for _, p := range f.Progs {
		if p.Type == elf.PT_GNU_PROPERTY || p.Type == elf.PT_NOTE {
			b, err := io.ReadAll(io.LimitReader(p.Open(), 1<<20))
			if err != nil {
				return Unknown, err
			}
			notes = append(notes, b)
		}
	}
	for _, b := range notes {
		if l := scanNotes(b, f.ByteOrder); l > level {
			level = l
		}
	}
	return level, nil
}

// scanNotes walks ELF64 notes (namesz, descsz, type, name, desc, each
// 4-byte aligned; property arrays inside 8-byte aligned: the gABI's note
// section and the Linux Extensions to gABI, "Program Property").
func scanNotes(b []byte, bo binary.ByteOrder) Level {
	level := Unknown
	for len(b) >= 12 {
		namesz, descsz, typ := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
		nameEnd := 12 + align(uint64(namesz), 4)
		descEnd := nameEnd + align(uint64(descsz), 8)
		if nameEnd > uint64(len(b)) || nameEnd+uint64(descsz) > uint64(len(b)) {
			break
		}
		if typ == ntGNUPropertyType0 && bytes.Equal(b[12:12+namesz], []byte("GNU\x00")) {
			if l := scanProperties(b[nameEnd:nameEnd+uint64(descsz)], bo); l > level {
				level = l
			}
		}
		if descEnd > uint64(len(b)) {
			break
		}
		b = b[descEnd:]
	}
	return level
}

func scanProperties(d []byte, bo binary.ByteOrder) Level {
	for len(d) >= 8 {
		typ, size := bo.Uint32(d), uint64(bo.Uint32(d[4:]))
		if 8+size > uint64(len(d)) {
			break
		}
		if typ == propX86ISA1Needed && size >= 4 {
			bits := bo.Uint32(d[8:])
			for l := V4; l >= Baseline; l-- {
				if bits&(1<<(l-1)) != 0 {
					return l
				}
			}
		}
		next := 8 + align(size, 8)
		if next > uint64(len(d)) {
			break
		}
		d = d[next:]
	}
	return Unknown
}

func align(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// LibcPaths are where distributions keep glibc's libc.so.6 on x86-64:
// Debian and Ubuntu's multiarch directory, then /usr/lib64 (RHEL, Fedora,
// openSUSE, Amazon Linux; /lib64 links there), then Arch's /usr/lib.
var LibcPaths = []string{
	"/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6",
	"/usr/lib64/libc.so.6", "/lib64/libc.so.6", "/usr/lib/libc.so.6",
}

// OfImage is the level the image under root needs, read from the first of
// LibcPaths that exists, and that path. Unknown with path "" when the image
// has no glibc (musl); Unknown with the path when its libc.so.6 is of
// another architecture. Symlinks resolve inside the image only (inroot).
// Errors: a libc.so.6 that cannot be read or parsed.
func OfImage(root *inroot.Root) (Level, string, error) {
	for _, p := range LibcPaths {
		f, err := root.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Unknown, p, err
		}
		l, err := FromELF(f)
		f.Close()
		if errors.Is(err, ErrNotX86_64) {
			return Unknown, p, nil
		}
		if err != nil {
			return Unknown, p, fmt.Errorf("%s: %v", p, err)
		}
		return l, p, nil
	}
	return Unknown, "", nil
}
