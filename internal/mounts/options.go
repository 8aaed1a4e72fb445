package mounts

import (
	"strings"

	"golang.org/x/sys/unix"
)

// mountFlags are the options mount(8) turns into mount(2) flags rather
// than passing them to the filesystem (libmount's linux optmap,
// util-linux libmount/src/optmap.c): a filesystem given "noatime" as data
// refuses it with EINVAL. clear is true for options that turn a flag off.
var mountFlags = map[string]struct {
	flag  uintptr
	clear bool
}{
	"ro": {unix.MS_RDONLY, false}, "rw": {unix.MS_RDONLY, true},
	"nosuid": {unix.MS_NOSUID, false}, "suid": {unix.MS_NOSUID, true},
	"nodev": {unix.MS_NODEV, false}, "dev": {unix.MS_NODEV, true},
	"noexec": {unix.MS_NOEXEC, false}, "exec": {unix.MS_NOEXEC, true},
	"sync": {unix.MS_SYNCHRONOUS, false}, "async": {unix.MS_SYNCHRONOUS, true},
	"dirsync": {unix.MS_DIRSYNC, false},
	"noatime": {unix.MS_NOATIME, false}, "atime": {unix.MS_NOATIME, true},
	"nodiratime": {unix.MS_NODIRATIME, false}, "diratime": {unix.MS_NODIRATIME, true},
	"relatime": {unix.MS_RELATIME, false}, "norelatime": {unix.MS_RELATIME, true},
	"strictatime": {unix.MS_STRICTATIME, false}, "nostrictatime": {unix.MS_STRICTATIME, true},
	"lazytime": {unix.MS_LAZYTIME, false}, "nolazytime": {unix.MS_LAZYTIME, true},
	"mand": {unix.MS_MANDLOCK, false}, "nomand": {unix.MS_MANDLOCK, true},
	"silent": {unix.MS_SILENT, false}, "loud": {unix.MS_SILENT, true},
	"defaults": {0, false},
}

// SplitOptions splits mount options as fstab and mount(8) write them
// ("noatime", "subvol=@", "errors=remount-ro") into mount(2) flags, set
// on top of flags, and the comma-separated data the filesystem parses.
// Empty options are dropped.
func SplitOptions(flags uintptr, opts []string) (uintptr, string) {
	var data []string
	for _, o := range opts {
		if o == "" {
			continue
		}
		f, ok := mountFlags[o]
		switch {
		case !ok:
			data = append(data, o)
		case f.clear:
			flags &^= f.flag
		default:
			flags |= f.flag
		}
	}
	return flags, strings.Join(data, ",")
}
