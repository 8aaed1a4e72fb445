package sbom

import (
	"io/fs"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// os-release(5): "The file /etc/os-release takes precedence over
// /usr/lib/os-release. Applications should check for the former, and
// exclusively use its data if it exists, and only fall back to the latter
// if it is missing."
var osReleaseFiles = []string{"/etc/os-release", "/usr/lib/os-release"}

// readOS reads the first os-release file present. A file that is present
// but unreadable is a line in inv.Incomplete.
func readOS(r *inroot.Root, inv *Inventory) OS {
	for _, name := range osReleaseFiles {
		data, ok, bad := readDB(r, name)
		if bad != "" {
			inv.Incomplete = append(inv.Incomplete, bad)
			continue
		}
		if !ok {
			continue
		}
		v := parseOSRelease(string(data))
		return OS{ID: v["ID"], VersionID: v["VERSION_ID"], Name: v["NAME"], PrettyName: v["PRETTY_NAME"]}
	}
	return OS{}
}

// parseOSRelease reads os-release(5)'s syntax: KEY=value lines, values in
// shell quoting ("..." with \" \\ \$ \` escapes, or '...'), "#" comments.
// A line it cannot read is skipped, as the man page tells readers to do.
func parseOSRelease(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		out[k] = unquoteShell(v)
	}
	return out
}

func unquoteShell(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\'':
			j := strings.IndexByte(v[i+1:], '\'')
			if j < 0 {
				b.WriteString(v[i+1:])
				return b.String()
			}
			b.WriteString(v[i+1 : i+1+j])
			i += j + 1
		case '"':
			for i++; i < len(v) && v[i] != '"'; i++ {
				if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\"\\$`", v[i+1]) >= 0 {
					i++
				}
				b.WriteByte(v[i])
			}
		case '\\':
			if i+1 < len(v) {
				i++
				b.WriteByte(v[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Where kernels leave their version: a modules directory per kernel
// (depmod(8): /lib/modules/VERSION, /usr/lib/modules on merged-/usr and
// Fedora systems) and the image installed by kernel packages
// (/boot/vmlinuz-VERSION on Debian, Fedora and SUSE; vmlinux-VERSION on
// some architectures).
var (
	moduleDirs = []string{"/lib/modules", "/usr/lib/modules"}
	bootPrefix = []string{"vmlinuz-", "vmlinux-"}
)

// readKernels returns the kernel versions found, sorted and unique. A
// modules directory counts only when it holds something: removing a
// kernel package can leave its empty directory.
func readKernels(r *inroot.Root) []string {
	seen := map[string]bool{}
	for _, d := range moduleDirs {
		for _, e := range listDir(r, d) {
			if !e.IsDir() {
				continue
			}
			if len(listDir(r, d+"/"+e.Name())) > 0 {
				seen[e.Name()] = true
			}
		}
	}
	for _, e := range listDir(r, "/boot") {
		for _, p := range bootPrefix {
			if v, ok := strings.CutPrefix(e.Name(), p); ok && v != "" && e.Type().IsRegular() {
				seen[v] = true
			}
		}
	}
	var out []string
	for v := range seen {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// readDir lists a directory of the image. O_DIRECTORY refuses anything
// else before opening it: a FIFO of the image would block the open.
func readDir(r *inroot.Root, name string) ([]fs.DirEntry, error) {
	f, err := r.OpenFile(name, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// listDir is readDir for the kernel list, which is best effort: a missing
// or unreadable directory lists nothing (no database to be incomplete).
func listDir(r *inroot.Root, name string) []fs.DirEntry {
	es, _ := readDir(r, name)
	return es
}

// String is the OS as one line: PRETTY_NAME, else NAME VERSION_ID, else ID.
func (o OS) String() string {
	switch {
	case o.PrettyName != "":
		return o.PrettyName
	case o.Name != "":
		return strings.TrimSpace(o.Name + " " + o.VersionID)
	case o.ID != "":
		return strings.TrimSpace(o.ID + " " + o.VersionID)
	}
	return "unknown"
}
