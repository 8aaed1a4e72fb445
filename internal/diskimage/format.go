// Package diskimage handles disk image files as files: it recognises their
// format and compression, decompresses and copies them without paying for
// their holes, converts them with qemu-img and grows raw images.
package diskimage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// Format is an image format, spelled as qemu-img's -f/-O take it.
type Format string

// Formats Detect recognises.
const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	VMDK  Format = "vmdk"
	VHDX  Format = "vhdx"
	VDI   Format = "vdi"
	VPC   Format = "vpc" // Microsoft VHD (qemu-img calls it vpc)
)

const vdiSignature = 0xbeda107f // little-endian uint32 at offset 0x40 of a VDI header

// Detect tells the image format from the file's content, never from its
// name: a base image called "disk.img" may well be a qcow2. Anything not
// recognised is raw; whether a raw file holds a partition table or a bare
// filesystem is for the partition package to decide.
func Detect(path string) (Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("detect image format: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("detect image format of %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("detect image format: %s is not a regular file", path)
	}

	head := make([]byte, 512)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("detect image format: read %s: %w", path, err)
	}
	if f := DetectHead(head[:n]); f != Raw {
		return f, nil
	}

	// A fixed VHD is raw data followed by a 512-byte footer.
	if st.Size() >= 1024 {
		foot := make([]byte, 8)
		if _, err := f.ReadAt(foot, st.Size()-512); err != nil {
			return "", fmt.Errorf("detect image format: read footer of %s: %w", path, err)
		}
		if string(foot) == "conectix" {
			return VPC, nil
		}
	}
	return Raw, nil
}

// DetectHead tells the format from an image's first bytes (512 are
// enough): Raw when no header is recognised. A fixed VHD, whose only mark
// is a footer, is Raw here (Detect reads the footer too).
func DetectHead(head []byte) Format {
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return QCOW2
	case bytes.HasPrefix(head, []byte("KDMV")),
		bytes.HasPrefix(head, []byte("# Disk DescriptorFile")):
		return VMDK
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return VHDX
	case len(head) >= 0x44 && binary.LittleEndian.Uint32(head[0x40:0x44]) == vdiSignature:
		return VDI
	case bytes.HasPrefix(head, []byte("conectix")):
		// Dynamic and differencing VHDs carry a copy of the footer at offset 0.
		return VPC
	}
	return Raw
}
