package isalevel

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// markedLib links an empty shared object as the linker marks glibc built
// for a level (ld's -z x86-64-vN, binutils 2.36+, writes the same
// GNU_PROPERTY_X86_ISA_1_NEEDED note as glibc's isa-level.c); zflag ""
// links one without the note.
func markedLib(t *testing.T, zflag string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "e.c")
	if err := os.WriteFile(src, []byte("int x;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "libc.so.6")
	args := []string{"-shared", "-nostdlib", "-o", out, src}
	if zflag != "" {
		args = append(args, "-Wl,-z,"+zflag)
	}
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %v: %v\n%s", args, err, b)
	}
	return out
}

func levelOf(t *testing.T, path string) (Level, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return FromELF(f)
}

func TestFromELF(t *testing.T) {
	for _, tc := range []struct {
		zflag string
		want  Level
	}{
		{"", Unknown},
		{"x86-64-baseline", Baseline},
		{"x86-64-v2", V2},
		{"x86-64-v3", V3},
		{"x86-64-v4", V4},
	} {
		t.Run(tc.want.String()+"/"+tc.zflag, func(t *testing.T) {
			got, err := levelOf(t, markedLib(t, tc.zflag))
			if err != nil || got != tc.want {
				t.Errorf("FromELF = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// The host's own glibc: Debian builds it for the baseline and marks it so.
func TestFromELFHostLibc(t *testing.T) {
	const p = "/lib/x86_64-linux-gnu/libc.so.6"
	if _, err := os.Stat(p); err != nil {
		t.Skip("no Debian x86-64 glibc on this host")
	}
	if got, err := levelOf(t, p); err != nil || got != Baseline {
		t.Errorf("FromELF(%s) = %v, %v; want the baseline", p, got, err)
	}
}

func TestFromELFRefuses(t *testing.T) {
	lib, err := os.ReadFile(markedLib(t, "x86-64-v2"))
	if err != nil {
		t.Fatal(err)
	}
	arm := bytes.Clone(lib)
	binary.LittleEndian.PutUint16(arm[18:], 183) // e_machine = EM_AARCH64
	for name, b := range map[string][]byte{
		"not-elf":   []byte("#!/bin/sh\n"),
		"truncated": lib[:200],
		"aarch64":   arm,
	} {
		t.Run(name, func(t *testing.T) {
			if l, err := FromELF(bytes.NewReader(b)); err == nil || l != Unknown {
				t.Errorf("FromELF = %v, %v; want an error", l, err)
			}
		})
	}
}

// scanNotes on hand-made note bytes: malformed sizes end the walk, they
// never panic or read past the end.
func TestScanNotes(t *testing.T) {
	le := binary.LittleEndian
	note := func(name string, typ uint32, desc []byte) []byte {
		var b []byte
		n := append([]byte(name), 0)
		b = le.AppendUint32(b, uint32(len(n)))
		b = le.AppendUint32(b, uint32(len(desc)))
		b = le.AppendUint32(b, typ)
		b = append(b, n...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		b = append(b, desc...)
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
		return b
	}
	prop := func(typ, val uint32) []byte {
		var b []byte
		b = le.AppendUint32(b, typ)
		b = le.AppendUint32(b, 4)
		b = le.AppendUint32(b, val)
		return le.AppendUint32(b, 0) // pad to 8
	}
	const andFeature = 0xc0000002 // GNU_PROPERTY_X86_FEATURE_1_AND (IBT, SHSTK)
	for _, tc := range []struct {
		name string
		b    []byte
		want Level
	}{
		{"rhel9-libc", note("GNU", ntGNUPropertyType0, append(prop(andFeature, 3), prop(propX86ISA1Needed, 0b11)...)), V2},
		{"v3-only-bit", note("GNU", ntGNUPropertyType0, prop(propX86ISA1Needed, 0b100)), V3},
		{"build-id-first", append(note("GNU", 3, make([]byte, 20)), note("GNU", ntGNUPropertyType0, prop(propX86ISA1Needed, 1))...), Baseline},
		{"other-owner", note("XYZ", ntGNUPropertyType0, prop(propX86ISA1Needed, 0b100)), Unknown},
		{"huge-descsz", append(le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, 4), 0xffffffff), 5), "GNU\x00"...), Unknown},
		{"huge-prop-size", note("GNU", ntGNUPropertyType0, le.AppendUint32(le.AppendUint32(nil, propX86ISA1Needed), 0xfffffff0)), Unknown},
		{"empty", nil, Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := scanNotes(tc.b, le); got != tc.want {
				t.Errorf("scanNotes = %v, want %v", got, tc.want)
			}
		})
	}
}

// OfImage reads the image's libc.so.6 where its distribution keeps it, and
// never follows a symlink out of the image to the host's.
func TestOfImage(t *testing.T) {
	v3 := markedLib(t, "x86-64-v3")
	lib, err := os.ReadFile(markedLib(t, "x86-64-v2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		setup    func(dir string) error
		want     Level
		wantPath string
	}{
		{"rhel-usr-lib64", func(dir string) error {
			if err := os.MkdirAll(filepath.Join(dir, "usr/lib64"), 0o755); err != nil {
				return err
			}
			if err := os.Symlink("usr/lib64", filepath.Join(dir, "lib64")); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "usr/lib64/libc.so.6"), lib, 0o755)
		}, V2, "/usr/lib64/libc.so.6"},
		{"musl", func(dir string) error {
			return os.MkdirAll(filepath.Join(dir, "lib"), 0o755)
		}, Unknown, ""},
		{"link-to-host", func(dir string) error {
			if err := os.MkdirAll(filepath.Join(dir, "usr/lib64"), 0o755); err != nil {
				return err
			}
			return os.Symlink(v3, filepath.Join(dir, "usr/lib64/libc.so.6"))
		}, Unknown, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			root, err := inroot.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			got, path, err := OfImage(root)
			if err != nil || got != tc.want || path != tc.wantPath {
				t.Errorf("OfImage = %v, %q, %v; want %v, %q", got, path, err, tc.want, tc.wantPath)
			}
		})
	}
}
