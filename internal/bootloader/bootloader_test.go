package bootloader

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"6.1.0-28-amd64", "6.1.0-101-amd64", true},
		{"6.1.0-101-amd64", "6.1.0-28-amd64", false},
		{"5.10.0-9-amd64", "6.1.0-1-amd64", true},
		{"6.1.0-28-amd64", "6.1.0-28-amd64", false},
		{"6.1.0-28-amd64", "6.1.0-28-cloud-amd64", true},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.less {
			t.Errorf("versionLess(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

func TestFindKernel(t *testing.T) {
	for _, tc := range []struct {
		name           string
		files          []string
		kernel, initrd string
		err            error
	}{
		{"none", []string{"boot/config-6.1.0-28-amd64"}, "", "", ErrNoKernel},
		{"no boot", nil, "", "", ErrNoKernel},
		{"newest wins", []string{"boot/vmlinuz-6.1.0-9-amd64", "boot/vmlinuz-6.1.0-28-amd64", "boot/initrd.img-6.1.0-28-amd64", "boot/initrd.img-6.1.0-9-amd64"},
			"/boot/vmlinuz-6.1.0-28-amd64", "/boot/initrd.img-6.1.0-28-amd64", nil},
		{"no initrd", []string{"boot/vmlinuz-6.1.0-28-amd64"}, "/boot/vmlinuz-6.1.0-28-amd64", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.files {
				os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755)
				os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
			}
			r, err := inroot.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			k, i, err := FindKernel(r)
			if err != tc.err || k != tc.kernel || i != tc.initrd {
				t.Errorf("FindKernel = %q, %q, %v; want %q, %q, %v", k, i, err, tc.kernel, tc.initrd, tc.err)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	cfg := Config(Root{UUID: "u-1"}, Entry{Title: "Debian GNU/Linux 12 (bookworm)", Kernel: "/boot/vmlinuz-6", Initrd: "/boot/initrd.img-6", Cmdline: DefaultCmdline})
	for _, want := range []string{
		"menuentry 'Debian GNU/Linux 12 (bookworm)' {",
		"search --no-floppy --fs-uuid --set=root u-1",
		"linux /boot/vmlinuz-6 root=UUID=u-1 ro console=tty0 console=ttyS0,115200\n",
		"initrd /boot/initrd.img-6\n",
		"terminal_output console serial",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("grub.cfg lacks %q:\n%s", want, cfg)
		}
	}
}

// TestConfigEFIConsole: arm64-efi GRUB has no com0; its menu stays on
// the firmware's console (AAVMF's is the serial port).
func TestConfigEFIConsole(t *testing.T) {
	cfg := Config(Root{UUID: "u-1"}, Entry{Kernel: "/boot/vmlinuz-6-arm64", Cmdline: DefaultCmdlineArm64, EFIConsole: true})
	if strings.Contains(cfg, "serial") || strings.Contains(cfg, "terminal_") {
		t.Errorf("grub.cfg for the firmware's console names a terminal:\n%s", cfg)
	}
	if !strings.Contains(cfg, "linux /boot/vmlinuz-6-arm64 root=UUID=u-1 ro console=tty0 console=ttyAMA0,115200\n") {
		t.Errorf("grub.cfg:\n%s", cfg)
	}
}

func TestPatchCore(t *testing.T) {
	core := make([]byte, 5*sector+100)
	binary.LittleEndian.PutUint16(core[sector-2:], kernelSegment)
	if err := patchCore(core, 2048); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint64(core[blocklistStart:]); got != 2049 {
		t.Errorf("block list start %d, want 2049", got)
	}
	if got := binary.LittleEndian.Uint16(core[blocklistStart+8:]); got != 5 {
		t.Errorf("block list length %d, want 5 sectors", got)
	}
}

func TestKernelVersion(t *testing.T) {
	dir := t.TempDir()
	// A setup header as the boot protocol lays it out, version string at
	// 0x200+0x300.
	img := make([]byte, 0x600)
	copy(img[0x202:], "HdrS")
	img[0x20E], img[0x20F] = 0x00, 0x03
	copy(img[0x500:], "6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP\x00")
	withHeader := filepath.Join(dir, "vmlinuz")
	os.WriteFile(withHeader, img, 0o644)
	named := filepath.Join(dir, "vmlinuz-6.12.9-custom")
	os.WriteFile(named, []byte("no header"), 0o644)
	neither := filepath.Join(dir, "bzImage")
	os.WriteFile(neither, []byte("no header"), 0o644)
	for _, tc := range []struct{ path, want, wantErr string }{
		{withHeader, "6.1.0-50-amd64", ""},
		{named, "6.12.9-custom", ""},
		{neither, "", "no kernel release in its x86 setup header, nor in its name"},
	} {
		got, err := KernelVersion(tc.path)
		if got != tc.want || (tc.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("KernelVersion(%s) = %q, %v; want %q, %q", filepath.Base(tc.path), got, err, tc.want, tc.wantErr)
		}
	}
}
