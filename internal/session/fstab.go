package session

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
)

// devicePath matches the device names fstabs use for partition N of the
// first disk on common hypervisors and clouds (sda, vda, hda, xvda,
// nvme0n1, mmcblk0), or of whatever loop device the image was made on. A
// second disk (vdb1, nvme1n1p1) is not this image: it must not resolve to
// this image's partition of the same number.
var devicePath = regexp.MustCompile(`^/dev/(?:(?:[shv]d|xvd)a(\d*)|(?:nvme0n1|mmcblk0|loop\d+)(?:p(\d+))?)$`)

// MountFstab mounts, beneath the root, the entries of the image's
// /etc/fstab that live on its other partitions. Entries the kernel cannot
// mount here, or that name no partition of this disk, are skipped (and
// returned) unless RequiredMounts lists them.
func (s *Session) MountFstab() (mounted []string, skipped []mounts.Skipped, err error) {
	if s.rootFS == nil {
		return nil, nil, errors.New("the root filesystem is not mounted")
	}
	data, err := s.rootFS.ReadFile("/etc/fstab")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the image's /etc/fstab: %w", err)
	}
	entries, err := fstab.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, nil, fmt.Errorf("the image's /etc/fstab: %w", err)
	}
	required := map[string]bool{}
	for _, m := range s.opts.RequiredMounts {
		required[path.Clean(m)] = true
	}
	// Entries that are not disk filesystems (swap, proc...) are left out
	// quietly, unless required: then the stack says why they cannot be.
	var below []fstab.Entry
	for _, e := range entries {
		if e.File == "/" || !e.Mountable() && !required[path.Clean(e.File)] {
			continue
		}
		if err := s.lvRefusal(e); err != nil {
			return nil, nil, err
		}
		below = append(below, e)
	}
	resolved := map[string]*Partition{}
	resolve := func(e fstab.Entry) (string, bool) {
		p := s.resolve(e)
		if p == nil {
			return "", false
		}
		resolved[e.File] = p
		return p.Device, true
	}
	skipped, err = s.stack.MountFstab(below, resolve, required)
	if err != nil {
		return nil, skipped, err
	}
	// In fstab order, so the report reads like the file.
	for _, e := range below {
		if p, ok := resolved[e.File]; ok && !isSkipped(skipped, e.File) {
			s.mountedAt[p] = s.opts.MountPath + e.File
			if !s.staged(e.File) {
				if err := s.wrote(p); err != nil {
					return mounted, skipped, err
				}
			}
			what := p.String()
			if v, ok := e.Option("subvol"); ok && p.FS.Type == "btrfs" {
				what += ", subvolume " + v
			}
			if s.staged(e.File) {
				what += "; the kernel cannot mount it, so its files are staged in a tmpfs there and what changes is written back with mtools at the end"
			}
			mounted = append(mounted, fmt.Sprintf("%s (%s)", e.File, what))
		}
	}
	return mounted, skipped, nil
}

func isSkipped(skipped []mounts.Skipped, target string) bool {
	for _, s := range skipped {
		if s.Entry.File == target {
			return true
		}
	}
	return false
}

// resolve finds the partition an fstab entry names, or nil.
func (s *Session) resolve(e fstab.Entry) *Partition {
	kind, value := e.Source()
	for _, p := range s.Parts {
		switch kind {
		case fstab.KindUUID:
			if p.FS.UUID != "" && strings.EqualFold(p.FS.UUID, value) {
				return p
			}
		case fstab.KindLabel:
			if p.FS.Label != "" && p.FS.Label == value {
				return p
			}
		case fstab.KindPartUUID:
			if p.UUID != "" && strings.EqualFold(p.UUID, value) {
				return p
			}
		case fstab.KindPartLabel:
			if p.Name != "" && p.Name == value {
				return p
			}
		}
	}
	if kind == fstab.KindPath {
		if p, _, _, ok := s.lvByPath(value); ok {
			return p
		}
		m := devicePath.FindStringSubmatch(value)
		if m == nil {
			return nil
		}
		n := 0
		if num := m[1] + m[2]; num != "" {
			n, _ = strconv.Atoi(num)
		}
		return s.Partition(n)
	}
	return nil
}
