package mounts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// FS is what blkid found on a device or file.
type FS struct {
	Type      string // ext4, xfs, btrfs, vfat, swap...; "" means no filesystem
	Label     string
	UUID      string
	PartUUID  string // PART_ENTRY_UUID, only when the kernel knows the device as a partition
	PartLabel string // PART_ENTRY_NAME, likewise
	PTType    string // partition table type when dev is a whole disk (dos, gpt)
}

// Probe identifies the filesystem on dev (a block device or a plain file)
// with `blkid -p -o export`, the standard tool: -p reads the superblock
// directly rather than blkid's cache, and works on files too.
//
// An FS with an empty Type and a nil error means "no filesystem": blkid
// found nothing (exit status 2), or found only a partition table (PTType
// is then set).
func Probe(dev string) (FS, error) {
	// blkid answers "nothing found" for a missing path too.
	if _, err := os.Stat(dev); err != nil {
		return FS{}, fmt.Errorf("probing filesystem: %w", err)
	}
	cmd := exec.Command("blkid", "-p", "-o", "export", dev)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 {
		return FS{}, nil
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if errors.As(err, &exit) && exit.ExitCode() == 8 {
			msg = "ambivalent result: more than one filesystem signature " + msg
		}
		return FS{}, fmt.Errorf("probing %s with blkid -p: %v %s", dev, err, msg)
	}
	var fs FS
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = unescapeExport(v)
		switch k {
		case "TYPE":
			fs.Type = v
		case "LABEL":
			fs.Label = v
		case "UUID":
			fs.UUID = v
		case "PART_ENTRY_UUID":
			fs.PartUUID = v
		case "PART_ENTRY_NAME":
			fs.PartLabel = v
		case "PTTYPE":
			fs.PTType = v
		}
	}
	return fs, nil
}

// unescapeExport undoes blkid's export-format escaping: a backslash before
// any character (a space in a label is "\ ").
func unescapeExport(v string) string {
	if !strings.Contains(v, `\`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}
