package session

import (
	"fmt"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
)

// Holding is what one partition holds, for the messages that list a disk
// (no root found, root_partition out of range).
type Holding struct {
	What    string   // "swap space", "an LVM physical volume", "an ext4 filesystem"
	Detail  []string // more lines, indented under it (a volume group's LVs, a filesystem's subvolumes)
	NotRoot string   // why the builder cannot use it as the root; "" when it could
}

// holders describe a partition by its filesystem type as blkid names it
// (TYPE). One function per type: the LVM and btrfs code replace theirs
// (in their own files, from an init function) to name the volume group
// and its LVs, or the subvolumes.
var holders = map[string]func(s *Session, p *Partition) Holding{
	"":                  holdsNothing,
	"swap":              func(*Session, *Partition) Holding { return Holding{What: "swap space", NotRoot: "swap holds no files"} },
	"vfat":              holdsFAT,
	"btrfs":             holdsRootCandidate,
	"ext2":              holdsRootCandidate,
	"ext3":              holdsRootCandidate,
	"ext4":              holdsRootCandidate,
	"xfs":               holdsRootCandidate,
	"crypto_LUKS":       fixed("a LUKS-encrypted volume", "the builder cannot unlock encrypted volumes"),
	"linux_raid_member": fixed("a member of a Linux software RAID (md) array", "the builder does not assemble RAID arrays"),
	"zfs_member":        fixed("a member of a ZFS pool", "the builder does not import ZFS pools"),
}

func fixed(what, notRoot string) func(*Session, *Partition) Holding {
	return func(*Session, *Partition) Holding { return Holding{What: what, NotRoot: notRoot} }
}

func holdsNothing(s *Session, p *Partition) Holding {
	if p.Number > 0 && p.TypeName() == "BIOS boot" {
		return Holding{What: "GRUB's core image (BIOS boot partition)", NotRoot: "no filesystem"}
	}
	return Holding{What: "no filesystem blkid recognizes", NotRoot: "no filesystem"}
}

// kernelMayMount is mounts.KernelMayMount, a variable so that the tests
// can describe a disk as both kinds of kernel would.
var kernelMayMount = mounts.KernelMayMount

func holdsFAT(s *Session, p *Partition) Holding {
	h := Holding{What: "a FAT filesystem", NotRoot: "FAT cannot hold a Linux root (no owners, permissions or symlinks)"}
	if p.Number > 0 && p.TypeName() == "EFI System" || p.TypeMBR == 0xef {
		h.What = "a FAT filesystem, the EFI system partition"
	}
	if yes, known := kernelMayMount("vfat"); known && !yes {
		what := "skipped"
		if s.opts.FAT == FATStaged && !s.opts.ReadOnly {
			what = "staged with mtools"
		}
		h.NotRoot += fmt.Sprintf("; this kernel cannot mount vfat either (its mount point in the image's fstab, such as /boot/efi, is %s)", what)
	}
	return h
}

// holdsRootCandidate is a filesystem the root is looked for on; FindRoot
// says why it was not chosen when it looked.
func holdsRootCandidate(s *Session, p *Partition) Holding {
	h := Holding{What: fmt.Sprintf("a%s %s filesystem", map[bool]string{true: "n"}[strings.HasPrefix(p.FS.Type, "ext") || p.FS.Type == "xfs"], p.FS.Type)}
	h.NotRoot = s.looked[p]
	return h
}

// describe is one partition's line (and its detail lines) for Describe.
func (s *Session) describe(p *Partition) []string {
	f, ok := holders[p.FS.Type]
	if !ok {
		f = fixed(fmt.Sprintf("a %s filesystem", p.FS.Type), "the root is looked for on ext2, ext3, ext4, xfs and btrfs only")
	}
	h := f(s, p)
	var table string
	switch {
	case p.LV != nil:
		table = fmt.Sprintf("LV of volume group %s, %s: ", p.LV.VG, diskimage.FormatSize(p.Size))
	case p.Number > 0:
		table = fmt.Sprintf("%s, %s: ", p.TypeName(), diskimage.FormatSize(p.Size))
	}
	line := fmt.Sprintf("  %s: %s%s", p, table, h.What)
	if h.NotRoot != "" {
		line += "; not usable as the root: " + h.NotRoot
	}
	out := []string{line}
	for _, d := range h.Detail {
		out = append(out, "      "+d)
	}
	return out
}

// usable reports whether some partition could still be the root, so that
// pointing root_partition at it is worth suggesting.
func (s *Session) usable() bool {
	for _, p := range s.Parts {
		if rootCandidateTypes[p.FS.Type] {
			return true
		}
	}
	return false
}
