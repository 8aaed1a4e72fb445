package diskimage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSubformat(t *testing.T) {
	for _, c := range []struct {
		f       Format
		sub     string
		wantErr string
	}{
		{VMDK, "", ""},
		{VMDK, VMDKStreamOptimized, ""},
		{VMDK, VMDKMonolithicSparse, ""},
		{VMDK, "monolithicFlat", `vmdk_subformat "monolithicFlat" is not one of streamOptimized, monolithicSparse`},
		{VPC, VPCFixed, ""},
		{VPC, "Fixed", `vmdk_subformat "Fixed" is not one of dynamic, fixed`},
		{QCOW2, "fixed", `the qcow2 format has no subformats`},
	} {
		err := CheckSubformat("vmdk_subformat", c.f, c.sub)
		if (err == nil) != (c.wantErr == "") || err != nil && !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("CheckSubformat(%s, %q) = %v, want %q", c.f, c.sub, err, c.wantErr)
		}
	}
}

// AlignVirtualSize rounds up to the MiB, raw and qcow2, and never cuts.
func TestAlignVirtualSize(t *testing.T) {
	needTool(t, "qemu-img")
	dir := t.TempDir()
	for _, c := range []struct {
		size, want int64
	}{
		{4 << 20, 4 << 20},
		{4<<20 + 512, 5 << 20},
		{(4 << 20) - 512, 4 << 20},
	} {
		raw := filepath.Join(dir, "a.raw")
		if err := os.WriteFile(raw, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(raw, c.size); err != nil {
			t.Fatal(err)
		}
		qcow := filepath.Join(dir, "a.qcow2")
		if err := Convert(context.Background(), raw, Raw, qcow, QCOW2, ConvertOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, img := range []struct {
			path string
			f    Format
		}{{raw, Raw}, {qcow, QCOW2}} {
			got, err := AlignVirtualSize(context.Background(), img.path, img.f)
			if err != nil || got != c.want {
				t.Errorf("%s of %d bytes: %d, %v; want %d", img.f, c.size, got, err, c.want)
			}
			if info, err := Inspect(context.Background(), img.path); err != nil || info.VirtualSize != c.want {
				t.Errorf("%s of %d bytes: qemu-img sees %d, %v", img.f, c.size, info.VirtualSize, err)
			}
		}
	}
}
