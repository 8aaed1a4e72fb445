package fstab

import (
	"fmt"
	"strings"
)

// RootFS is the root filesystem a disk gives an fstab to match.
type RootFS struct {
	UUID  string // compared case-insensitively, as blkid's are
	Label string // "" when the filesystem has none
	Type  string // ext4, xfs
	Spec  string // what to write when the "/" line names another device: LABEL=... or UUID=...
}

// names reports whether e's device is r, by UUID or label (tags or udev
// links; a device path such as /dev/xvda1 names nothing stable).
func (r RootFS) names(e Entry) bool {
	switch kind, v := e.Source(); kind {
	case KindUUID:
		return strings.EqualFold(v, r.UUID)
	case KindLabel:
		return r.Label != "" && v == r.Label
	}
	return false
}

// FixRoot makes the "/" line of an fstab name r, changing as little as it
// can, and says what it changed ("" when nothing). Every other line stays
// byte for byte. A "/" line that names r by UUID or label keeps its
// device; one that names something else (/dev/xvda1, another UUID,
// PARTUUID=) gets r.Spec; a type other than r's (ext3 on what is now
// ext4) or "auto" becomes r's, its options, dump and pass are kept. With
// no "/" line, one is added. Errors come from a line Parse refuses.
func FixRoot(text string, r RootFS) (string, string, error) {
	entries, err := Parse(strings.NewReader(text))
	if err != nil {
		return "", "", err
	}
	lines := strings.SplitAfter(text, "\n")
	for _, e := range entries {
		if e.File != "/" {
			continue
		}
		line := lines[e.Line-1]
		fields := strings.Fields(line)
		if i := commentField(fields); i >= 0 {
			fields = fields[:i]
		}
		for len(fields) < 6 {
			fields = append(fields, []string{"", "", "auto", "defaults", "0", "1"}[len(fields)])
		}
		var changed []string
		if !r.names(e) {
			changed = append(changed, fmt.Sprintf("device %s -> %s", fields[0], r.Spec))
			fields[0] = r.Spec
		}
		if e.VFSType != r.Type {
			changed = append(changed, fmt.Sprintf("type %s -> %s", e.VFSType, r.Type))
			fields[2] = r.Type
		}
		if changed == nil {
			return text, "", nil
		}
		lines[e.Line-1] = strings.Join(fields, "\t") + "\n"
		return strings.Join(lines, ""), fmt.Sprintf("line %d (/): %s", e.Line, strings.Join(changed, ", ")), nil
	}
	if text != "" && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	pass := "1"
	if r.Type == "xfs" {
		pass = "0" // fsck.xfs does nothing; xfs_repair is not run at boot
	}
	add := fmt.Sprintf("%s\t/\t%s\tdefaults\t0\t%s\n", r.Spec, r.Type, pass)
	return text + add, "no / line: added " + strings.TrimSpace(add), nil
}

func commentField(fields []string) int {
	for i := 1; i < len(fields); i++ {
		if strings.HasPrefix(fields[i], "#") {
			return i
		}
	}
	return -1
}

// Elsewhere lists the entries of an fstab that mount, at boot, a disk
// filesystem other than r without nofail or noauto: a device the disk
// made around r does not hold (an AMI's /dev/xvdb, the original disk's
// /boot by UUID). systemd waits for such a device (90 s by default) and
// then stops the boot in emergency mode (systemd.mount(5), nofail).
func Elsewhere(text string, r RootFS) ([]Entry, error) {
	entries, err := Parse(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range entries {
		if e.File == "/" || r.names(e) || !e.Mountable() || e.HasOption("nofail") {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}
