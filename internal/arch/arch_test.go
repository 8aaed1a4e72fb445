package arch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// elfHeader builds a minimal ELF header (the gABI's Elf32_Ehdr/Elf64_Ehdr,
// no program or section headers) that debug/elf accepts.
func elfHeader(class64, bigEndian bool, machine uint16, flags uint32) []byte {
	var bo binary.ByteOrder = binary.LittleEndian
	data := byte(1)
	if bigEndian {
		bo, data = binary.BigEndian, 2
	}
	class := byte(1)
	size := 52
	if class64 {
		class, size = 2, 64
	}
	b := make([]byte, size)
	copy(b, []byte{0x7f, 'E', 'L', 'F', class, data, 1})
	bo.PutUint16(b[16:], 2) // ET_EXEC
	bo.PutUint16(b[18:], machine)
	bo.PutUint32(b[20:], 1)
	if class64 {
		bo.PutUint32(b[48:], flags)
		bo.PutUint16(b[52:], uint16(size))
	} else {
		bo.PutUint32(b[36:], flags)
		bo.PutUint16(b[40:], uint16(size))
	}
	return b
}

func TestOfELF(t *testing.T) {
	for _, c := range []struct {
		name         string
		c64, be      bool
		machine      uint16
		flags        uint32
		want         Arch
		wantErrWords string
	}{
		{"amd64", true, false, 62, 0, AMD64, ""},
		{"i386", false, false, 3, 0, I386, ""},
		{"arm64", true, false, 183, 0, ARM64, ""},
		// Debian armhf's busybox: "EABI5 version 1", flags 0x5000400.
		{"armhf", false, false, 40, 0x05000400, ARMHF, ""},
		// Debian armel: EABI5 soft-float (EF_ARM_ABI_FLOAT_SOFT 0x200).
		{"armel", false, false, 40, 0x05000200, ARMEL, ""},
		{"riscv64", true, false, 243, 0x5, RISCV64, ""},
		{"ppc64el", true, false, 21, 2, PPC64EL, ""},
		{"s390x", true, true, 22, 0, S390X, ""},
		{"ppc64 big-endian", true, true, 21, 1, "", "EM_PPC64"},
		{"mips", false, true, 8, 0, "", "EM_MIPS"},
		{"unknown e_machine", true, false, 0x6666, 0, "", "26214"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := OfELF(bytes.NewReader(elfHeader(c.c64, c.be, c.machine, c.flags)))
			if c.wantErrWords != "" {
				if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), c.wantErrWords) {
					t.Fatalf("OfELF = %q, %v; want ErrUnknown naming %s", got, err, c.wantErrWords)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("OfELF = %q, %v; want %s", got, err, c.want)
			}
		})
	}
	if _, err := OfELF(strings.NewReader("#!/bin/sh\n")); err == nil {
		t.Fatal("a script is not ELF")
	}
	// Truncated and garbage headers are errors, not panics.
	for n := 0; n < 64; n += 7 {
		OfELF(bytes.NewReader(elfHeader(true, false, 183, 0)[:n]))
	}
}

func TestQEMUAndHost(t *testing.T) {
	for _, a := range Known {
		if a.QEMU() == "" || a.UnameMachine() == "" {
			t.Errorf("%s: QEMU %q, uname -m %q", a, a.QEMU(), a.UnameMachine())
		}
	}
	if ARMHF.QEMU() != "arm" || ARM64.QEMU() != "aarch64" || Arch("mips").QEMU() != "" {
		t.Error("qemu names")
	}
	if !Host().Valid() || !Host().Native() {
		t.Errorf("Host() = %q", Host())
	}
}

// TestOfImage: /bin/sh is followed inside the image (links, /bin ->
// usr/bin), its loader must be of the same architecture, and errors name
// what was read.
func TestOfImage(t *testing.T) {
	hostSh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Skipf("the host's /bin/sh, to copy: %v", err)
	}
	sh, err := os.ReadFile(hostSh)
	if err != nil {
		t.Skipf("the host's /bin/sh, to copy: %v", err)
	}
	interp, err := interpreter(bytes.NewReader(sh))
	if err != nil || interp == "" {
		t.Skipf("the host's /bin/sh has no loader (%v)", err)
	}
	ld, err := os.ReadFile(interp)
	if err != nil {
		t.Skipf("the host's loader %s, to copy: %v", interp, err)
	}
	write := func(root, name string, b []byte) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	open := func(dir string) *inroot.Root {
		r, err := inroot.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}

	// merged /usr, /bin/sh -> dash, and the host's loader
	dir := t.TempDir()
	write(dir, "usr/bin/dash", sh)
	os.Symlink("dash", filepath.Join(dir, "usr/bin/sh"))
	os.Symlink("usr/bin", filepath.Join(dir, "bin"))
	write(dir, interp, ld)
	if a, err := OfImage(open(dir)); err != nil || a != Host() {
		t.Fatalf("OfImage = %q, %v; want %s", a, err, Host())
	}

	// the loader of another architecture
	write(dir, interp, elfHeader(false, false, 40, 0x05000400))
	if _, err := OfImage(open(dir)); err == nil || !strings.Contains(err.Error(), "armhf") || !strings.Contains(err.Error(), "/usr/bin/dash") {
		t.Fatalf("mismatched loader: %v", err)
	}
	// no loader
	os.Remove(filepath.Join(dir, interp))
	if _, err := OfImage(open(dir)); err == nil || !strings.Contains(err.Error(), interp) {
		t.Fatalf("missing loader: %v", err)
	}

	// static busybox-like /bin/sh, absolute link that must stay in the image
	dir = t.TempDir()
	write(dir, "bin/busybox", elfHeader(true, false, 183, 0))
	os.Symlink("/bin/busybox", filepath.Join(dir, "bin/sh"))
	if a, err := OfImage(open(dir)); err != nil || a != ARM64 {
		t.Fatalf("OfImage = %q, %v; want arm64", a, err)
	}
	// a link leading out of the image resolves inside it
	os.Remove(filepath.Join(dir, "bin/sh"))
	os.Symlink("../../../../../../"+strings.TrimPrefix(hostSh, "/"), filepath.Join(dir, "bin/sh"))
	if a, err := OfImage(open(dir)); err == nil {
		t.Fatalf("a link out of the image reached the host's %s: %s", hostSh, a)
	}
	// not ELF
	os.Remove(filepath.Join(dir, "bin/sh"))
	write(dir, "bin/sh", []byte("#!/bin/busybox\n"))
	if _, err := OfImage(open(dir)); err == nil || !strings.Contains(err.Error(), "/bin/sh") {
		t.Fatalf("script /bin/sh: %v", err)
	}
}
