package diskimage

import (
	"errors"
	"fmt"
	"path/filepath"
)

// sidecarExts are files post-processors write beside an image; they are
// never the image, though content detection would call them raw.
var sidecarExts = map[string]bool{".sha256": true, ".md5": true, ".json": true, ".log": true}

// FindDisk picks an artifact's disk image among its files: the first raw or
// qcow2 file by content, skipping checksum and report files.
func FindDisk(files []string) (string, Format, error) {
	for _, f := range files {
		if sidecarExts[filepath.Ext(f)] {
			continue
		}
		format, err := Detect(f)
		if err != nil {
			continue
		}
		if format == Raw || format == QCOW2 {
			return f, format, nil
		}
	}
	return "", "", errors.New("the artifact has no raw or qcow2 disk image among its files " + fmt.Sprint(files))
}

// FindImage is FindDisk for readers that take every format qemu-img reads
// (a backing file of an overlay): the first raw, qcow2, vmdk, vhdx, vpc
// or vdi file by content, skipping checksum and report files.
func FindImage(files []string) (string, Format, error) {
	for _, f := range files {
		if sidecarExts[filepath.Ext(f)] {
			continue
		}
		switch format, err := Detect(f); format {
		case Raw, QCOW2, VMDK, VHDX, VPC, VDI:
			if err == nil {
				return f, format, nil
			}
		}
	}
	return "", "", errors.New("the artifact has no disk image among its files " + fmt.Sprint(files))
}
