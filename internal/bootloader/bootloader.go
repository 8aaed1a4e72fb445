// Package bootloader makes a disk image bootable with GRUB, entirely in user
// space: no partition device nodes (the kernel here parses no partition
// tables), no grub-install, no mount of the EFI system partition (the
// kernel here has no VFAT).
//
//   - BIOS: a core image made with grub-mkimage (i386-pc) is written into
//     the BIOS boot partition (GPT) or the gap after the MBR, its block
//     list patched to where it lies, and grub-pc-bin's boot.img goes into
//     the MBR around the partition table, as grub-bios-setup would do it.
//   - UEFI: grub-mkimage (x86_64-efi) makes a standalone GRUB whose
//     embedded config finds the root filesystem; it is written as
//     \EFI\BOOT\BOOTX64.EFI on a FAT32 filesystem made with go-diskfs in
//     the EFI system partition's byte range.
//
// Both GRUBs carry every module they need and read /boot/grub/grub.cfg
// from the root filesystem, which Config writes.
package bootloader

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Default locations of the GRUB images (Debian's grub-pc-bin and
// grub-efi-amd64-bin).
const (
	DefaultBIOSDir = "/usr/lib/grub/i386-pc"
	DefaultEFIDir  = "/usr/lib/grub/x86_64-efi"
)

// Root says which filesystem GRUB boots from.
type Root struct {
	UUID   string // filesystem UUID, as GRUB's search --fs-uuid wants it
	FSType string // ext4 or xfs
}

// Modules embedded in both GRUBs: nothing is loaded from the image at boot.
var commonModules = []string{
	"part_msdos", "part_gpt", "ext2", "xfs", "search", "search_fs_uuid",
	"search_label", "normal", "configfile", "linux", "echo", "test",
	"serial", "terminal", "gzio", "ls", "cat", "minicmd",
}

var biosModules = append([]string{"biosdisk"}, commonModules...)

// embeddedConfig is what the core image runs before normal mode: it finds
// the root filesystem by UUID; normal mode then reads $prefix/grub.cfg.
func embeddedConfig(r Root) string {
	return fmt.Sprintf("search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n", r.UUID)
}

// mkimage runs grub-mkimage for format (i386-pc, x86_64-efi, arm64-efi)
// with the modules of dir (from Debian's package pkg) and returns the
// image's bytes.
func mkimage(ctx context.Context, dir, format, pkg string, modules []string, r Root) ([]byte, error) {
	if r.UUID == "" {
		return nil, fmt.Errorf("grub-mkimage: no root filesystem UUID")
	}
	if _, err := os.Stat(filepath.Join(dir, "moddep.lst")); err != nil {
		return nil, fmt.Errorf("GRUB %s modules not found in %s (install %s): %w", format, dir, pkg, err)
	}
	tmp, err := os.MkdirTemp("", "imagefactory-grub-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cfg := filepath.Join(tmp, "embedded.cfg")
	if err := os.WriteFile(cfg, []byte(embeddedConfig(r)), 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(tmp, "image")
	args := append([]string{"-d", dir, "-O", format, "-o", out, "-c", cfg, "-p", "/boot/grub"}, modules...)
	cmd := exec.CommandContext(ctx, "grub-mkimage", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("grub-mkimage -O %s: %v: %s", format, err, strings.TrimSpace(stderr.String()))
	}
	return os.ReadFile(out)
}
