// Package fstab parses /etc/fstab as found in a disk image, and says which
// entries name a disk filesystem the builder should mount beneath the
// image's root.
package fstab

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// Entry is one fstab line (fstab(5)). Octal escapes such as \040 are
// decoded in every field.
type Entry struct {
	Spec    string   // what to mount: UUID=..., LABEL=..., /dev/sda1, proc...
	File    string   // mount point
	VFSType string   // ext4, xfs, swap, auto...
	Options []string // mount options; ["defaults"] when the field is absent
	Freq    int      // dump frequency
	Pass    int      // fsck pass
	Line    int      // 1-based line number in the file, for messages
}

// Parse reads an fstab. Comments (# at the start of a line or of a field
// after the mount point) and blank lines are skipped; fields are separated
// by spaces or tabs. The type defaults to "auto" and the options to
// "defaults" when absent, as libmount does.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		for i := 1; i < len(fields); i++ {
			if strings.HasPrefix(fields[i], "#") {
				fields = fields[:i]
				break
			}
		}
		if len(fields) < 2 {
			return nil, fmt.Errorf("fstab line %d: %q has %d field(s), need at least a device and a mount point", n, sc.Text(), len(fields))
		}
		if len(fields) > 6 {
			return nil, fmt.Errorf("fstab line %d: %q has %d fields, at most 6 expected", n, sc.Text(), len(fields))
		}
		e := Entry{Spec: Unescape(fields[0]), File: Unescape(fields[1]), VFSType: "auto", Options: []string{"defaults"}, Line: n}
		if len(fields) > 2 {
			e.VFSType = Unescape(fields[2])
		}
		if len(fields) > 3 {
			e.Options = strings.Split(Unescape(fields[3]), ",")
		}
		for i, p := range []*int{&e.Freq, &e.Pass} {
			if len(fields) > 4+i {
				v, err := strconv.Atoi(fields[4+i])
				if err != nil || v < 0 {
					return nil, fmt.Errorf("fstab line %d: field %d %q is not a non-negative number", n, 5+i, fields[4+i])
				}
				*p = v
			}
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading fstab: %w", err)
	}
	return out, nil
}

// Unescape decodes \NNN octal escapes (\040 space, \011 tab, \134
// backslash); any other backslash is kept as is. fstab(5) and the kernel's
// /proc/PID/mountinfo (proc(5); fs/proc_namespace.c mangles space, tab,
// newline and backslash) escape the same way.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// Source kinds returned by Entry.Source.
const (
	KindUUID      = "UUID"
	KindLabel     = "LABEL"
	KindPartUUID  = "PARTUUID"
	KindPartLabel = "PARTLABEL"
	KindPath      = "path"  // a device path such as /dev/vda1
	KindOther     = "other" // not a device: proc, tmpfs, server:/export, none...
)

// Source says how the entry names its device. Tags (UUID=, LABEL=,
// PARTUUID=, PARTLABEL=, any case, optionally quoted) and the udev links
// /dev/disk/by-uuid/X, by-label/X, by-partuuid/X, by-partlabel/X give the
// matching kind and the value (udev's \xHH escapes decoded); another
// absolute path gives KindPath; anything else KindOther.
func (e Entry) Source() (kind, value string) {
	s := e.Spec
	if i := strings.IndexByte(s, '='); i > 0 {
		tag := strings.ToUpper(s[:i])
		switch tag {
		case KindUUID, KindLabel, KindPartUUID, KindPartLabel:
			return tag, unquote(s[i+1:])
		}
	}
	if strings.HasPrefix(s, "/") {
		for prefix, kind := range map[string]string{
			"/dev/disk/by-uuid/":      KindUUID,
			"/dev/disk/by-label/":     KindLabel,
			"/dev/disk/by-partuuid/":  KindPartUUID,
			"/dev/disk/by-partlabel/": KindPartLabel,
		} {
			if v, ok := strings.CutPrefix(s, prefix); ok && v != "" && !strings.Contains(v, "/") {
				return kind, udevUnescape(v)
			}
		}
		return KindPath, s
	}
	return KindOther, s
}

func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
		return v[1 : len(v)-1]
	}
	return v
}

// udevUnescape decodes the \xHH escapes udev uses in /dev/disk/by-label
// names (a space is \x20, a slash \x2f).
func udevUnescape(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// HasOption reports whether opt (such as "noauto") is among the options;
// an option with a value matches on its name ("subvol" matches
// "subvol=@").
func (e Entry) HasOption(opt string) bool {
	_, ok := e.Option(opt)
	return ok
}

// Option returns the value of opt ("" for a flag) and whether it is present.
func (e Entry) Option(opt string) (string, bool) {
	for _, o := range e.Options {
		name, val, _ := strings.Cut(o, "=")
		if name == opt {
			return val, true
		}
	}
	return "", false
}

// notDisk are filesystem types that never live on one of the image's
// partitions.
var notDisk = map[string]bool{
	"swap": true, "none": true, "ignore": true, "proc": true, "sysfs": true, "tmpfs": true,
	"ramfs": true, "devpts": true, "devtmpfs": true, "cgroup": true, "cgroup2": true,
	"securityfs": true, "debugfs": true, "tracefs": true, "configfs": true, "pstore": true,
	"efivarfs": true, "bpf": true, "mqueue": true, "hugetlbfs": true, "binfmt_misc": true,
	"autofs": true, "fusectl": true, "usbfs": true, "overlay": true, "rpc_pipefs": true,
	"nfs": true, "nfs4": true, "cifs": true, "smb3": true, "smbfs": true, "ceph": true,
	"glusterfs": true, "9p": true, "virtiofs": true, "sshfs": true, "davfs": true, "iso9660": true,
	"udf": true, "nfsd": true, "lustre": true,
}

// NotMountableReason says why the builder should not mount this entry
// beneath the image root, or "" when it should: not a disk filesystem
// (swap, proc, tmpfs, network...), a bind mount, noauto, _netdev, or a
// mount point that is not an absolute path. The root "/" is mountable: the
// caller decides that it is already mounted.
func (e Entry) NotMountableReason() string {
	t := e.VFSType
	switch {
	case notDisk[t] || strings.HasPrefix(t, "fuse") || strings.HasPrefix(t, "nfs"):
		return fmt.Sprintf("type %s is not a disk filesystem", t)
	case e.HasOption("bind") || e.HasOption("rbind"):
		return "bind mount"
	case e.HasOption("noauto"):
		return "noauto"
	case e.HasOption("_netdev"):
		return "network device (_netdev)"
	case !strings.HasPrefix(e.File, "/") || path.Clean(e.File) != strings.TrimSuffix(e.File, "/") && e.File != "/":
		return fmt.Sprintf("mount point %q is not a clean absolute path", e.File)
	}
	if kind, _ := e.Source(); kind == KindOther {
		return fmt.Sprintf("source %q is not a device", e.Spec)
	}
	return ""
}

// Mountable reports whether the entry is a disk filesystem to mount beneath
// the image root (see NotMountableReason).
func (e Entry) Mountable() bool { return e.NotMountableReason() == "" }

// Depth is the number of components of the mount point ("/" is 0,
// "/boot/efi" is 2), to mount parents before children.
func (e Entry) Depth() int {
	c := path.Clean("/" + e.File)
	if c == "/" {
		return 0
	}
	return strings.Count(c, "/")
}

// String formats the entry as an fstab line (without escaping), for messages.
func (e Entry) String() string {
	return fmt.Sprintf("%s %s %s %s %d %d", e.Spec, e.File, e.VFSType, strings.Join(e.Options, ","), e.Freq, e.Pass)
}
