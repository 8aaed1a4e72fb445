package cloudimport

import (
	"encoding/binary"
	"strings"
	"testing"
)

// TestContentFormat: headers of each format (qemu's block drivers' magic
// numbers), ISO 9660's "CD001" at 32769 (ECMA-119 §8.1), and what is
// refused as a contradiction.
func TestContentFormat(t *testing.T) {
	head := func(prefix string, at int, magic string) []byte {
		b := make([]byte, HeadSize)
		copy(b, prefix)
		copy(b[at:], magic)
		return b
	}
	vdi := make([]byte, 512)
	binary.LittleEndian.PutUint32(vdi[0x40:], 0xbeda107f)
	hybrid := head("\xeb\x63\x90", 32769, "CD001") // an MBR boot jump, and ISO 9660 at 32 KiB
	hybrid[510], hybrid[511] = 0x55, 0xaa
	cases := []struct {
		name string
		head []byte
		want string
	}{
		{"qcow2", []byte("QFI\xfb\x00\x00\x00\x03"), "qcow2"},
		{"vmdk sparse", []byte("KDMV\x01"), "vmdk"},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\n"), "vmdk"},
		{"vhdx", []byte("vhdxfile"), "vhdx"},
		{"vdi", vdi, "vdi"},
		{"dynamic vhd is vhd, not qemu's vpc", []byte("conectix"), "vhd"},
		{"iso", head("", 32769, "CD001"), "iso"},
		{"hybrid iso", hybrid, "iso"},
		{"CD001 elsewhere", head("", 32768, "CD001"), "raw"},
		{"zeros", make([]byte, HeadSize), "raw"},
		{"short", []byte("abc"), "raw"},
		{"empty", nil, "raw"},
	}
	for _, c := range cases {
		if got := ContentFormat(c.head); got != c.want {
			t.Errorf("%s: ContentFormat = %q, want %q", c.name, got, c.want)
		}
	}

	checks := []struct {
		declared, detected string
		ok                 bool
	}{
		{"qcow2", "qcow2", true},
		{"raw", "qcow2", false},
		{"qcow2", "raw", false},
		{"iso", "iso", true},
		{"raw", "iso", false},
		{"iso", "raw", false},
		{"ami", "raw", true}, // no header of its own
		{"ami", "qcow2", false},
		{"vhd", "vhd", true},
	}
	for _, c := range checks {
		err := CheckFormat(c.declared, c.detected, "disk.img")
		if c.ok != (err == nil) {
			t.Errorf("CheckFormat(%s, %s) = %v", c.declared, c.detected, err)
		}
		if err != nil && (!strings.Contains(err.Error(), `"`+c.declared+`"`) || !strings.Contains(err.Error(), "which is "+c.detected) || !strings.Contains(err.Error(), "disk.img")) {
			t.Errorf("CheckFormat(%s, %s): %v does not name both formats and the file", c.declared, c.detected, err)
		}
	}
}
