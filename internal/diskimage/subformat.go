package diskimage

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// Subformats of vmdk and vpc output, as qemu-img's -o subformat= takes them.
const (
	// VMDKStreamOptimized is a vmdk whose grains are deflate-compressed and
	// written in order (VMware's "Virtual Disk Format 5.0", "Stream-Optimized
	// Compressed Sparse Extents"): the disk format of OVF packages, vSphere's
	// and ESXi's OVF/OVA import and vCenter's content library.
	VMDKStreamOptimized = "streamOptimized"
	// VMDKMonolithicSparse is one growable file with an embedded descriptor
	// (the same spec, "Hosted Sparse Extents"): what VMware Workstation,
	// Fusion, Player and VirtualBox open as a disk, but not what ESXi runs
	// nor imports directly (vmkfstools -i converts it).
	VMDKMonolithicSparse = "monolithicSparse"
	// VPCDynamic is a VHD that grows with its data (Microsoft's "Virtual
	// Hard Disk Image Format Specification": footer copy at byte 0, dynamic
	// header, block allocation table), qemu-img's default.
	VPCDynamic = "dynamic"
	// VPCFixed is a VHD that is the raw disk followed by a 512-byte footer
	// (disk type 2): what Azure takes, with a virtual size that is a whole
	// number of MiB (see AlignVirtualSize).
	VPCFixed = "fixed"
)

// Subformats lists the subformats each output format takes, default first.
// The default of the vmdk list is this project's (streamOptimized), not
// qemu-img's (monolithicSparse).
var Subformats = map[Format][]string{
	VMDK: {VMDKStreamOptimized, VMDKMonolithicSparse},
	VPC:  {VPCDynamic, VPCFixed},
}

// CheckSubformat says whether sub ("" for the format's default) is one of
// f's subformats; option is the name of the user's option, which the error
// names with the values it takes.
func CheckSubformat(option string, f Format, sub string) error {
	if sub == "" {
		return nil
	}
	for _, s := range Subformats[f] {
		if s == sub {
			return nil
		}
	}
	if len(Subformats[f]) == 0 {
		return fmt.Errorf("%s %q: the %s format has no subformats", option, sub, f)
	}
	return fmt.Errorf("%s %q is not one of %s (the first is the default)", option, sub, strings.Join(Subformats[f], ", "))
}

// MiB is the unit Azure's VHDs are sized in.
const MiB = 1 << 20

// AlignVirtualSize grows the image at path (raw or qcow2) so that its
// virtual size is a whole number of MiB, as Azure requires of a fixed VHD
// ("Prepare a Linux VHD for Azure": "the virtual size of all VHDs on Azure
// must be aligned to 1 MB"), and returns the new size in bytes. It only
// grows (the added space reads as zeros; a raw file gets a hole), so no
// data is ever cut. A GPT's backup header then lies up to 1 MiB before the
// end, as after Azure's own `qemu-img resize` recipe; Linux uses the
// primary header, and growpart moves the backup on first boot.
func AlignVirtualSize(ctx context.Context, path string, f Format) (int64, error) {
	var size int64
	switch f {
	case Raw:
		fi, err := os.Stat(path)
		if err != nil {
			return 0, err
		}
		size = fi.Size()
	case QCOW2:
		info, err := Inspect(ctx, path)
		if err != nil {
			return 0, err
		}
		size = info.VirtualSize
	default:
		return 0, fmt.Errorf("align %s: a %s image; only raw and qcow2 are grown here", path, f)
	}
	aligned := (size + MiB - 1) / MiB * MiB
	if aligned == size {
		return size, nil
	}
	var err error
	if f == Raw {
		err = Grow(path, aligned)
	} else {
		err = ResizeQCOW2(ctx, path, aligned)
	}
	if err != nil {
		return 0, err
	}
	return aligned, nil
}
