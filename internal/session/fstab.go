package session

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strconv"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
)

// devicePath matches the device names fstabs use for partition N of the
// first disk on common hypervisors and clouds.
var devicePath = regexp.MustCompile(`^/dev/(?:(?:[shv]d|xvd)[a-z](\d*)|(?:nvme\d+n\d+|mmcblk\d+|loop\d+)(?:p(\d+))?)$`)

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
	var below []fstab.Entry
	for _, e := range entries {
		if e.File == "/" || !e.Mountable() {
			continue
		}
		below = append(below, e)
	}
	required := map[string]bool{}
	for _, m := range s.opts.RequiredMounts {
		required[m] = true
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
	for file, p := range resolved {
		if !isSkipped(skipped, file) && err == nil {
			s.mountedAt[p] = s.opts.MountPath + file
			mounted = append(mounted, fmt.Sprintf("%s (%s)", file, p))
		}
	}
	for m := range required {
		if _, ok := resolved[m]; !ok && !listed(below, m) {
			err = errors.Join(err, fmt.Errorf("required mount %s is not in the image's /etc/fstab", m))
		}
	}
	return mounted, skipped, err
}

func isSkipped(skipped []mounts.Skipped, target string) bool {
	for _, s := range skipped {
		if s.Entry.File == target {
			return true
		}
	}
	return false
}

func listed(entries []fstab.Entry, file string) bool {
	for _, e := range entries {
		if e.File == file {
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
