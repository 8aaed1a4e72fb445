package diskimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// The same content, in two files at two paths with different times,
// converted with the same epoch and build name gives the same bytes in every
// format; another epoch changes the formats that carry an identifier or a
// time; qemu still reads every patched image as the input.
func TestConvertReproducible(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	a := filepath.Join(dir, "a", "in.raw")
	b := filepath.Join(dir, "b", "copy.raw")
	for _, d := range []string{filepath.Dir(a), filepath.Dir(b)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Random clusters (stored as they are) between compressible text,
	// so compressed clusters of many sizes race one another.
	makeSparse(t, a, 64<<20, 1<<20, 0, 5<<20, 9<<20, 30<<20, 47<<20)
	f, err := os.OpenFile(a, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(12 << 20); off < 28<<20; off += 1 << 20 {
		line := bytes.Repeat([]byte("reproducible "+time.Unix(off, 0).String()+"\n"), (1<<20)/48)
		if _, err := f.WriteAt(line, off+512); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if _, err := Copy(context.Background(), a, b, nil); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1e9, 0)
	if err := os.Chtimes(b, old, old); err != nil {
		t.Fatal(err)
	}

	src, same, other := repro.New(1767225600, "pipeline"), repro.New(1767225600, "pipeline"), repro.New(1767225601, "pipeline")
	convert := func(t *testing.T, in, sub string, f Format, o ConvertOptions, s *repro.Source) string {
		t.Helper()
		out := filepath.Join(dir, sub, "disk."+string(f))
		os.MkdirAll(filepath.Dir(out), 0o755)
		o.Repro = s
		if err := Convert(context.Background(), in, Raw, out, f, o); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, c := range []struct {
		name       string
		f          Format
		o          ConvertOptions
		identified bool // carries an identifier or a time qemu draws
	}{
		{"qcow2 zstd", QCOW2, ConvertOptions{Compression: "zstd"}, false},
		{"qcow2 zlib", QCOW2, ConvertOptions{Compression: "zlib"}, false},
		{"qcow2", QCOW2, ConvertOptions{}, false},
		{"vmdk", VMDK, ConvertOptions{}, true},
		{"vmdk streamOptimized", VMDK, ConvertOptions{Subformat: VMDKStreamOptimized}, true},
		{"vhdx", VHDX, ConvertOptions{}, true},
		{"vpc", VPC, ConvertOptions{}, true},
		{"vpc fixed", VPC, ConvertOptions{Subformat: VPCFixed}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			sub := strings.ReplaceAll(c.name, " ", "-")
			x := convert(t, a, sub+"/1", c.f, c.o, src)
			time.Sleep(1100 * time.Millisecond) // vpc's time stamp counts seconds
			y := convert(t, b, sub+"/2", c.f, c.o, same)
			if !bytes.Equal(fileHash(t, x), fileHash(t, y)) {
				t.Fatalf("same input, same epoch: %s and %s differ (first at byte %d)", x, y, firstDiff(t, x, y))
			}
			for _, out := range []string{x} {
				cmp := exec.Command("qemu-img", "compare", "-f", "raw", "-F", string(c.f), a, out)
				if msg, err := cmp.CombinedOutput(); err != nil {
					t.Fatalf("qemu-img compare %s: %v: %s", out, err, msg)
				}
			}
			if c.f == QCOW2 {
				// A compressed one was laid out anew: clean, and no working file left.
				if msg, err := exec.Command("qemu-img", "check", x).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img check %s: %v: %s", x, err, msg)
				}
				if left, _ := filepath.Glob(filepath.Join(filepath.Dir(x), "*part")); len(left) > 0 {
					t.Errorf("working files left: %v", left)
				}
			}
			z := convert(t, a, sub+"/3", c.f, c.o, other)
			if differ := !bytes.Equal(fileHash(t, x), fileHash(t, z)); differ != c.identified {
				t.Errorf("another epoch: output differs = %v, want %v", differ, c.identified)
			}
			if c.identified {
				// Without a Source, qemu's random values stay: the check above can fail.
				r1, r2 := convert(t, a, sub+"/4", c.f, c.o, nil), convert(t, b, sub+"/5", c.f, c.o, nil)
				if bytes.Equal(fileHash(t, r1), fileHash(t, r2)) {
					t.Errorf("two conversions without a Source are equal: qemu-img drew nothing at random?")
				}
			}
			if c.f == VMDK {
				head := readHead(t, x, 64<<10)
				if !bytes.Contains(head, []byte(`SPARSE "disk.vmdk"`)) || bytes.Contains(head, []byte(".part")) {
					t.Errorf("the descriptor does not name disk.vmdk: %q", head[512:1024])
				}
			}
		})
	}
}

// firstDiff is the offset of the first byte where two files differ.
func firstDiff(t *testing.T, x, y string) int64 {
	t.Helper()
	bx, err := os.ReadFile(x)
	if err != nil {
		t.Fatal(err)
	}
	by, err := os.ReadFile(y)
	if err != nil {
		t.Fatal(err)
	}
	for i := range min(len(bx), len(by)) {
		if bx[i] != by[i] {
			return int64(i)
		}
	}
	return int64(min(len(bx), len(by)))
}

// patchVMDK on descriptors as qemu prints them: the CID in hex without
// leading zeros (1 to 8 digits), the extent named by the temporary file.
func TestPatchVMDK(t *testing.T) {
	src := repro.New(1767225600, "pipeline")
	want := fmt.Sprintf("CID=%08x\n", src.Uint32("vmdk/cid"))
	for _, cid := range []string{"d0cf8c7e", "fcf8c7e", "0"} {
		path := filepath.Join(t.TempDir(), "disk.vmdk.part")
		img := make([]byte, 21*512)
		copy(img, "KDMV")
		binary.LittleEndian.PutUint64(img[28:], 1)  // descriptorOffset
		binary.LittleEndian.PutUint64(img[36:], 20) // descriptorSize
		copy(img[512:], "# Disk DescriptorFile\nversion=1\nCID="+cid+"\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n# Extent description\nRW 1048576 SPARSE \"disk.vmdk.part\"\n")
		if err := os.WriteFile(path, img, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := patchVMDK(path, "disk.vmdk", src); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		desc := string(bytes.TrimRight(got[512:], "\x00"))
		if !strings.Contains(desc, "\n"+want) || !strings.Contains(desc, `SPARSE "disk.vmdk"`+"\n") || len(got) != len(img) {
			t.Errorf("CID=%s: descriptor after the patch:\n%s", cid, desc)
		}
	}
}

// A fixed VHD's byte 0 is the guest's: a disk whose first sector happens
// to start with the footer's cookie (a VHD stored at the start of the
// disk) keeps it, where a dynamic VHD's copy of the footer is patched.
func TestPatchVPCFixedKeepsTheGuestsFirstSector(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	in := filepath.Join(dir, "in.raw")
	first := make([]byte, 512)
	copy(first, "conectix")
	copy(first[60:], []byte{0, 0, 0, 3}) // says "dynamic"
	if err := os.WriteFile(in, first, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(in, 4<<20); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.vhd")
	if err := Convert(context.Background(), in, Raw, out, VPC, ConvertOptions{Subformat: VPCFixed, Repro: repro.New(1767225600, "pipeline")}); err != nil {
		t.Fatal(err)
	}
	if got := readHead(t, out, 512); !bytes.Equal(got, first) {
		t.Errorf("the guest's first sector changed: % x", got[:96])
	}
	// qemu itself reads such a disk's byte 0 as the footer, so the
	// footer at the end is checked here: cookie, fixed, a valid checksum.
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	ft := make([]byte, 512)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(ft, fi.Size()-512); err != nil {
		t.Fatal(err)
	}
	sum := binary.BigEndian.Uint32(ft[64:])
	binary.BigEndian.PutUint32(ft[64:], 0)
	var got uint32
	for _, b := range ft {
		got += uint32(b)
	}
	if string(ft[:8]) != "conectix" || binary.BigEndian.Uint32(ft[60:]) != vpcDiskFixed || ^got != sum {
		t.Errorf("the footer: cookie %q, type %d, checksum %#x (computed %#x)", ft[:8], binary.BigEndian.Uint32(ft[60:]), sum, ^got)
	}
}
