package cloudimport

import (
	"fmt"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
)

// HeadSize is how many of an image's first bytes ContentFormat needs: up to
// the end of an ISO 9660 volume descriptor's identifier.
const HeadSize = isoMagicOffset + len(isoMagic)

const isoMagic = "CD001"

// ISO 9660 (ECMA-119 §8.1): the volume descriptor set starts at logical
// sector 16 (byte 32768); each descriptor has its type byte, then the
// standard identifier "CD001".
const isoMagicOffset = 16*2048 + 1

// ContentFormat names the format of an image from its first bytes (at
// least HeadSize of them for an ISO to be seen), in the cloud's words:
// Glance's disk_format values (raw, qcow2, vmdk, vhdx, vdi, vhd, iso).
// Anything not recognised is raw. A hybrid ISO (an MBR at 0 and ISO 9660
// at 32 KiB, as Debian's installers) is iso.
func ContentFormat(head []byte) string {
	if len(head) >= HeadSize && string(head[isoMagicOffset:HeadSize]) == isoMagic {
		return "iso"
	}
	switch f := diskimage.DetectHead(head); f {
	case diskimage.VPC:
		return "vhd" // Glance's name for qemu-img's vpc
	default:
		return string(f)
	}
}

// rawLike are Glance disk formats whose content carries no header of its
// own: what ContentFormat calls raw may be any of them (Glance's
// disk_format list: ami, ari and aki are raw kernel, ramdisk and machine
// images; ploop's header ContentFormat does not know).
var rawLike = map[string]bool{"raw": true, "ami": true, "ari": true, "aki": true, "ploop": true}

// CheckFormat refuses a declared disk_format that the content contradicts.
// detected is ContentFormat's answer; declared is the format the cloud
// will be told. what names the bytes for the message (a file, a URL).
func CheckFormat(declared, detected, what string) error {
	if declared == detected || detected == "raw" && rawLike[declared] {
		return nil
	}
	return fmt.Errorf("disk_format %q contradicts the content of %s, which is %s: the cloud would hold an image labelled %s that does not boot",
		declared, what, detected, declared)
}
