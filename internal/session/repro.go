package session

import (
	"errors"
	"fmt"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/ext4repro"
)

// ext4Types are the filesystems ext4repro normalizes.
var ext4Types = map[string]bool{"ext2": true, "ext3": true, "ext4": true}

// wrote records that p is mounted read-write: in a reproducible session
// (Options.Repro), its allocator is tuned now (ext4) and its bytes are
// normalized by NormalizeWritten once the disk is released.
func (s *Session) wrote(p *Partition) error {
	if !s.reproducible() {
		return nil
	}
	for _, w := range s.written {
		if w.Number == p.Number && w.Start == p.Start {
			return nil
		}
	}
	s.written = append(s.written, *p)
	if ext4Types[p.FS.Type] {
		if err := ext4repro.Tune(p.Device); err != nil {
			return fmt.Errorf("reproducible build: %s: %w", p, err)
		}
	}
	return nil
}

// reproducible: the session writes, and its writes are to be normalized.
func (s *Session) reproducible() bool { return !s.opts.ReadOnly && s.opts.Repro != nil }

// NormalizeWritten makes every ext2/3/4 filesystem that this reproducible
// session mounted read-write byte-for-byte reproducible (ext4repro.Normalize,
// on the disk file, offline). Call it after Close (or Unmount and Detach):
// the filesystems must be unmounted. notes names each other filesystem the
// kernel wrote (xfs, btrfs), whose metadata keeps the clock's times and
// the kernel's random values. It does nothing in a session without
// Options.Repro.
func (s *Session) NormalizeWritten() (notes []string, err error) {
	if s.opts.Repro == nil {
		return nil, nil
	}
	if s.stack != nil || len(s.Parts) > 0 {
		return nil, errors.New("reproducible build: the filesystems must be unmounted and detached before they are normalized")
	}
	for _, p := range s.written {
		if !ext4Types[p.FS.Type] {
			notes = append(notes, fmt.Sprintf("reproducible build: partition %d (%s) was written through the kernel; its %s metadata (times, identifiers, layout) is not made reproducible", p.Number, p.FS.Type, p.FS.Type))
			continue
		}
		start := time.Now()
		rep, err := ext4repro.Normalize(ext4repro.Region{Path: s.opts.Disk, Offset: p.Start, Size: p.Size}, s.opts.Repro)
		if err != nil {
			return notes, fmt.Errorf("reproducible build: partition %d: %w", p.Number, err)
		}
		gens := "generations"
		if rep.Generations == 1 {
			gens = "generation"
		}
		s.logf("Normalized partition %d (%s) for a reproducible build in %s: %d inodes, %d %s, %d MiB of journal and %d MiB of free blocks zeroed",
			p.Number, p.FS.Type, diskimage.FormatDuration(time.Since(start)), rep.Inodes, rep.Generations, gens, rep.JournalBytes>>20, rep.FreeBytes>>20)
	}
	return notes, nil
}
