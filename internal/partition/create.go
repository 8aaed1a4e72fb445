package partition

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/google/uuid"
)

// Spec describes one partition for Create.
type Spec struct {
	Size     int64  // bytes, rounded up to whole sectors; 0 = the rest of the disk (last spec only)
	Type     string // "linux", "bios-boot" (GPT only), "esp", "swap", or a GPT type GUID / two hex digits for MBR
	Name     string // GPT partition name (GPT only)
	UUID     string // GPT partition GUID; empty = random (GPT only: MBR PARTUUIDs derive from the disk ID)
	Bootable bool   // MBR active flag, or GPT legacy-BIOS-bootable attribute
}

// Option tunes Create.
type Option func(*createOptions)

type createOptions struct{ diskID string }

// WithDiskID fixes the disk identifier: 8 hex digits (MBR disk signature)
// or a GUID (GPT disk GUID). Without it one is chosen at random.
func WithDiskID(id string) Option { return func(o *createOptions) { o.diskID = id } }

// alignSectors is the 1 MiB alignment every partition starts on.
const alignSectors = (1 << 20) / SectorSize

var gptTypes = map[string]gpt.Type{
	"linux":     gpt.LinuxFilesystem,
	"bios-boot": gpt.BIOSBoot,
	"esp":       gpt.EFISystemPartition,
	"swap":      gpt.LinuxSwap,
}

var mbrTypes = map[string]mbr.Type{
	"linux": mbr.Linux,
	"esp":   mbr.EFISystem,
	"swap":  mbr.LinuxSwap,
}

// Create writes a new partition table ("mbr" or "gpt") on an existing file
// (or block device), whose size is the disk size. Partitions are laid out
// in order, each starting on a 1 MiB boundary. Any previous table is
// replaced; partition contents are not touched.
func Create(path string, kind string, parts []Spec, opts ...Option) error {
	var o createOptions
	for _, opt := range opts {
		opt(&o)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("create partition table: %w", err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("create partition table on %s: %w", path, err)
	}
	total := uint64(size / SectorSize)
	if len(parts) == 0 {
		return fmt.Errorf("create partition table on %s: no partitions given", path)
	}

	// Lay out [start, end] sector ranges.
	var first, lastUsable uint64
	switch kind {
	case GPT:
		first, lastUsable = 34, total-34 // 1 header + 32 entry sectors at each end, plus the MBR
	case MBR:
		if len(parts) > 4 {
			return fmt.Errorf("create partition table on %s: an MBR holds at most 4 primary partitions, %d given", path, len(parts))
		}
		if total > mbrMaxSectors {
			return fmt.Errorf("create partition table on %s: the disk is %d bytes, more than an MBR can address (2 TiB)", path, size)
		}
		first, lastUsable = 1, total-1
	default:
		return fmt.Errorf("create partition table on %s: unknown kind %q (want mbr or gpt)", path, kind)
	}
	if total < 2*alignSectors {
		return fmt.Errorf("create partition table on %s: the disk (%d bytes) is too small", path, size)
	}
	type span struct{ start, end uint64 }
	spans := make([]span, len(parts))
	cursor := max(first, alignSectors)
	for i, s := range parts {
		start := (cursor + alignSectors - 1) / alignSectors * alignSectors
		var end uint64
		switch {
		case s.Size < 0:
			return fmt.Errorf("create partition table on %s: partition %d has a negative size", path, i+1)
		case s.Size == 0 && i != len(parts)-1:
			return fmt.Errorf("create partition table on %s: only the last partition may take the rest of the disk (size 0), not partition %d", path, i+1)
		case s.Size == 0:
			end = lastUsable
		default:
			end = start + (uint64(s.Size)+SectorSize-1)/SectorSize - 1
		}
		if start > lastUsable || end > lastUsable || end < start {
			return fmt.Errorf("create partition table on %s: partition %d (sectors %d-%d) does not fit on the disk (last usable sector %d)",
				path, i+1, start, end, lastUsable)
		}
		spans[i] = span{start, end}
		cursor = end + 1
	}

	if kind == GPT {
		table := &gpt.Table{LogicalSectorSize: SectorSize, PhysicalSectorSize: SectorSize, ProtectiveMBR: true}
		if o.diskID != "" {
			id, err := uuid.Parse(o.diskID)
			if err != nil {
				return fmt.Errorf("create partition table on %s: disk ID %q is not a GUID", path, o.diskID)
			}
			table.GUID = id.String()
		}
		for i, s := range parts {
			typ, ok := gptTypes[s.Type]
			if !ok {
				id, err := uuid.Parse(s.Type)
				if err != nil {
					return fmt.Errorf("create partition table on %s: partition %d: unknown type %q (want linux, bios-boot, esp, swap or a GUID)", path, i+1, s.Type)
				}
				typ = gpt.Type(strings.ToUpper(id.String()))
			}
			p := &gpt.Partition{Index: i + 1, Start: spans[i].start, End: spans[i].end, Type: typ, Name: s.Name, GUID: s.UUID}
			if s.Bootable {
				p.Attributes = 1 << 2
			}
			table.Partitions = append(table.Partitions, p)
		}
		if err := table.Write(f, size); err != nil {
			return fmt.Errorf("create GPT on %s: %w", path, err)
		}
		// go-diskfs truncates the protective MBR's size to 32 bits.
		if err := fixProtectiveMBR(f, total); err != nil {
			return fmt.Errorf("create GPT on %s: protective MBR: %w", path, err)
		}
		return f.Sync()
	}

	// MBR.
	sig := make([]byte, 4)
	if o.diskID != "" {
		b, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(o.diskID), "0x"))
		if err != nil || len(b) != 4 {
			return fmt.Errorf("create partition table on %s: disk ID %q is not 8 hex digits", path, o.diskID)
		}
		binary.LittleEndian.PutUint32(sig, binary.BigEndian.Uint32(b))
	} else {
		for binary.LittleEndian.Uint32(sig) == 0 {
			if _, err := rand.Read(sig); err != nil {
				return err
			}
		}
	}
	table := &mbr.Table{LogicalSectorSize: SectorSize, PhysicalSectorSize: SectorSize}
	for i, s := range parts {
		if s.Name != "" || s.UUID != "" {
			return fmt.Errorf("create partition table on %s: partition %d: an MBR has no partition names or GUIDs", path, i+1)
		}
		typ, ok := mbrTypes[s.Type]
		if !ok {
			b, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(s.Type), "0x"))
			if err != nil || len(b) != 1 || b[0] == 0 {
				return fmt.Errorf("create partition table on %s: partition %d: type %q has no MBR equivalent (want linux, esp, swap or two hex digits)", path, i+1, s.Type)
			}
			typ = mbr.Type(b[0])
		}
		sc, ec := chsOf(spans[i].start), chsOf(spans[i].end)
		table.Partitions = append(table.Partitions, &mbr.Partition{
			Index: i + 1, Bootable: s.Bootable, Type: typ,
			Start: uint32(spans[i].start), Size: uint32(spans[i].end - spans[i].start + 1),
			StartHead: sc[0], StartSector: sc[1], StartCylinder: sc[2],
			EndHead: ec[0], EndSector: ec[1], EndCylinder: ec[2],
		})
	}
	// A stale GPT would win over the new MBR on the next Read: wipe it.
	// Only header sectors are cleared: the last one may lie in a partition.
	blank := make([]byte, SectorSize)
	for _, lba := range []uint64{1, total - 1} {
		sig := make([]byte, len(gptSignature))
		if _, err := f.ReadAt(sig, int64(lba)*SectorSize); err != nil || string(sig) != gptSignature {
			continue
		}
		if _, err := f.WriteAt(blank, int64(lba)*SectorSize); err != nil {
			return fmt.Errorf("create MBR on %s: clear old GPT header: %w", path, err)
		}
	}
	if err := table.Write(f, size); err != nil {
		return fmt.Errorf("create MBR on %s: %w", path, err)
	}
	// go-diskfs leaves the disk signature (bytes 440-443) alone.
	if _, err := f.WriteAt(append(sig, 0, 0), 440); err != nil {
		return fmt.Errorf("create MBR on %s: write disk signature: %w", path, err)
	}
	return f.Sync()
}
