package ova

import (
	"archive/tar"
	"context"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
)

func TestFirmwareOf(t *testing.T) {
	esp := partition.Partition{TypeGUID: gptESP}
	biosBoot := partition.Partition{TypeGUID: gptBIOSBoot}
	root := partition.Partition{TypeGUID: "0fc63daf-8483-4772-8e79-3d69d8477de4"}
	for _, c := range []struct {
		name string
		t    partition.Table
		want string
	}{
		{"gpt, ESP only (Fedora, RHEL 9 UEFI-only layouts)", partition.Table{Kind: partition.GPT, Partitions: []partition.Partition{esp, root}}, EFI},
		{"gpt, BIOS boot and ESP (Debian, Ubuntu cloud images)", partition.Table{Kind: partition.GPT, Partitions: []partition.Partition{biosBoot, esp, root}}, BIOS},
		{"gpt, no ESP", partition.Table{Kind: partition.GPT, Partitions: []partition.Partition{biosBoot, root}}, BIOS},
		{"mbr", partition.Table{Kind: partition.MBR, Partitions: []partition.Partition{{TypeMBR: 0x83}}}, BIOS},
		{"mbr with an ESP", partition.Table{Kind: partition.MBR, Partitions: []partition.Partition{{TypeMBR: 0xef}, {TypeMBR: 0x83}}}, EFI},
		{"no table", partition.Table{Kind: partition.None}, ""},
	} {
		if got := FirmwareOf(&c.t); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		vm      VM
		wantErr string
	}{
		{VM{Name: "web-1.2", CPUs: 1, MemoryMiB: 512}, ""},
		{VM{Name: "my web", CPUs: 1, MemoryMiB: 512}, `the OVA's name "my web"`},
		{VM{Name: "../x", CPUs: 1, MemoryMiB: 512}, `the OVA's name "../x"`},
		{VM{Name: strings.Repeat("a", 90), CPUs: 1, MemoryMiB: 512}, "at most 89"},
		{VM{Name: "w", CPUs: 0, MemoryMiB: 512}, "0 CPUs"},
		{VM{Name: "w", CPUs: 1, MemoryMiB: 512, Firmware: "uefi"}, `firmware "uefi"`},
	} {
		err := c.vm.Check()
		if (err == nil) != (c.wantErr == "") || err != nil && !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%+v: %v, want %q", c.vm, err, c.wantErr)
		}
	}
}

// The descriptor is well-formed XML for any name Check accepts, names
// the firmware only when it is EFI, and a cancelled Write leaves nothing.
func TestDescriptorAndCancel(t *testing.T) {
	for _, fw := range []string{"", BIOS, EFI} {
		ovf, err := Descriptor(VM{Name: "a+b", CPUs: 1, MemoryMiB: 64, Firmware: fw}, 1234, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(strings.NewReader(string(ovf)))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("firmware %q: %v\n%s", fw, err, ovf)
			}
		}
		if got := strings.Contains(string(ovf), `vmw:key="firmware" vmw:value="efi"`); got != (fw == EFI) {
			t.Errorf("firmware %q: efi key present %v", fw, got)
		}
	}
	dir := t.TempDir()
	disk := filepath.Join(dir, "d.vmdk")
	if err := os.WriteFile(disk, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "x.ova")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Write(ctx, out, VM{Name: "x", CPUs: 1, MemoryMiB: 64}, Disk{Path: disk, Capacity: 3 << 20}, Options{}); err == nil {
		t.Fatal("a cancelled Write succeeded")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "x.ova*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	// With a time: the members carry it (a reproducible build's epoch).
	when := time.Unix(1767225600, 0)
	if err := Write(context.Background(), out, VM{Name: "x", CPUs: 1, MemoryMiB: 64}, Disk{Path: disk, Capacity: 3 << 20}, Options{ModTime: when}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(when) {
			t.Errorf("%s: time %v, want %v", h.Name, h.ModTime, when)
		}
	}
}
