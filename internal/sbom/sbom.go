// Package sbom reads the software bill of materials of an image offline:
// the packages its package databases record (dpkg, rpm, apk, pacman), its
// os-release(5) and its kernels, and writes them as an SPDX 2.3 JSON
// document (https://spdx.github.io/spdx-spec/v2.3/).
//
// No package manager runs: each database is parsed from the image's files,
// opened through internal/inroot, so a symlink of the image never leads out
// of its root (DESIGN.md #3: the image is hostile). A database that cannot
// be read fully is not an error: Read keeps what it could read and says
// which file failed in Inventory.Incomplete.
package sbom

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// Package managers, as Package.Manager names them.
const (
	Dpkg   = "dpkg"
	RPM    = "rpm"
	Apk    = "apk"
	Pacman = "pacman"
)

// Package is one installed package as its manager's database records it.
type Package struct {
	Name, Version, Arch string // Version as the manager prints it: deb "[epoch:]upstream[-revision]", rpm "[epoch:]version-release", apk/pacman as stored
	Source              string // source package: deb Source: (or Name), rpm SOURCERPM, apk o: origin, pacman %BASE%; "" if none
	License             string // as the db holds it (rpm LICENSE, apk L:, pacman %LICENSE%); "" if none (dpkg holds none)
	Manager             string // "dpkg", "rpm", "apk", "pacman"
	Supplier            string // who distributes it, as the db names it: deb Maintainer:, rpm VENDOR, apk m:, pacman %PACKAGER%; "" if none
	State               string // dpkg only: the Status: state when it is not "installed" (config-files, unpacked, half-configured, ...); "" otherwise
}

// OS is the image's os-release(5): /etc/os-release, else
// /usr/lib/os-release. Fields are "" when the file or the key is missing.
type OS struct{ ID, VersionID, Name, PrettyName string }

// Inventory is what an image holds.
type Inventory struct {
	OS         OS
	Kernels    []string  // kernel versions, sorted: /lib/modules/* and /usr/lib/modules/* dirs, /boot/vmlinu[xz]-*
	Packages   []Package // sorted by Manager, Name, Arch
	Incomplete []string  // one line per database that could not be read fully, naming its path in the image and why
}

// Read reads the image mounted (or a tree) at root, offline: no package
// manager runs, and no symlink of the image is followed out of root (names
// resolve through internal/inroot). The error is only for root itself
// being unreadable; a missing database is no package of that manager, and
// a bad one is a line in Incomplete, never an error.
func Read(root string) (*Inventory, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("sbom: image root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("sbom: image root %s is not a directory", root)
	}
	r, err := inroot.Open(root)
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	defer r.Close()
	if _, err := r.Stat("."); err != nil {
		return nil, fmt.Errorf("sbom: image root: %w", err)
	}
	inv := &Inventory{}
	inv.OS = readOS(r, inv)
	inv.Kernels = readKernels(r)
	for _, read := range readers {
		pkgs, incomplete := safeRead(r, read)
		inv.Packages = append(inv.Packages, pkgs...)
		inv.Incomplete = append(inv.Incomplete, incomplete...)
	}
	sortPackages(inv.Packages)
	return inv, nil
}

// A reader returns the packages of one manager and a line per database it
// could not read fully.
type reader struct {
	where string // the database, for the line of a reader that panicked
	read  func(r *inroot.Root) ([]Package, []string)
}

var readers = []reader{
	{dpkgStatus, readDpkg},
	{"the rpm database", readRPM},
	{apkInstalled, readApk},
	{pacmanLocal, readPacman},
}

// safeRead runs one reader; a panic in a parser fed a hostile database is
// one more Incomplete line, not a crashed build.
func safeRead(r *inroot.Root, rd reader) (pkgs []Package, incomplete []string) {
	defer func() {
		if p := recover(); p != nil {
			pkgs = nil
			incomplete = append(incomplete, fmt.Sprintf("%s: reader failed: %v", rd.where, p))
		}
	}()
	return rd.read(r)
}

func sortPackages(p []Package) {
	slices.SortStableFunc(p, func(a, b Package) int {
		return cmp.Or(cmp.Compare(a.Manager, b.Manager), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Arch, b.Arch), cmp.Compare(a.Version, b.Version))
	})
}

// readDB reads a database file: ok false and no line when it is absent; a
// line naming it when it is present but unreadable.
func readDB(r *inroot.Root, name string) (data []byte, ok bool, incomplete string) {
	// Exists does not follow the final symlink: one that resolves nowhere
	// inside the root is a database that cannot be read, not a missing one.
	there, err := r.Exists(name)
	if err != nil {
		return nil, false, fmt.Sprintf("%s: %v", name, unwrapPath(err))
	}
	if !there {
		return nil, false, ""
	}
	// Stat before opening: opening a FIFO blocks, opening a device node
	// of the image reaches a host device. O_NONBLOCK and the fstat after
	// cover a file swapped in between.
	fi, err := r.Stat(name)
	if err == nil && !fi.Mode().IsRegular() {
		return nil, false, fmt.Sprintf("%s: not a regular file but %s", name, kind(fi.Mode()))
	}
	f, err := r.OpenFile(name, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, false, fmt.Sprintf("%s: %v%s", name, unwrapPath(err), linkNote(r, name))
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, false, fmt.Sprintf("%s: %v", name, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Sprintf("%s: not a regular file but %s", name, kind(fi.Mode()))
	}
	if fi.Size() > maxDBSize {
		return nil, false, fmt.Sprintf("%s: %d bytes, more than the %d this reader takes", name, fi.Size(), maxDBSize)
	}
	data, err = io.ReadAll(io.LimitReader(f, maxDBSize+1))
	if err == nil && len(data) > maxDBSize {
		err = fmt.Errorf("grew past %d bytes while read", maxDBSize)
	}
	if err != nil {
		return nil, false, fmt.Sprintf("%s: %v", name, unwrapPath(err))
	}
	return data, true, ""
}

// maxDBSize bounds a text database read into memory, against a hostile
// image: Debian's status file is a few MiB on a desktop, apk's installed
// database (with its file lists) about as much.
const maxDBSize = 256 << 20

// kind names a file type for a message.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}

// linkNote says where a symlink points when reading through it failed.
func linkNote(r *inroot.Root, name string) string {
	if t, err := r.Readlink(name); err == nil {
		return fmt.Sprintf(" (a symlink to %q, which does not resolve inside the image)", t)
	}
	return ""
}

// unwrapPath drops the host path a PathError carries: lines name the path
// in the image.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Change is one package that differs between two inventories. From is ""
// for an added package, To is "" for a removed one.
type Change struct{ Manager, Name, Arch, From, To string }

// Changes is what Diff finds. Upgraded holds the packages of the same
// Manager, Name and Arch whose Version differs (up or down: no version
// ordering of any manager is applied). Each list is sorted by Manager,
// Name, Arch.
type Changes struct{ Added, Removed, Upgraded []Change }

// Diff returns what changed from base to final, keyed by Manager, Name
// and Arch. A key present several times in one inventory (which no real
// database holds) compares its versions joined by ",".
func Diff(base, final *Inventory) Changes {
	type key struct{ m, n, a string }
	index := func(inv *Inventory) (map[key]string, []key) {
		m := map[key]string{}
		var keys []key
		if inv == nil {
			return m, nil
		}
		for _, p := range inv.Packages {
			k := key{p.Manager, p.Name, p.Arch}
			if v, ok := m[k]; ok {
				m[k] = v + "," + p.Version
				continue
			}
			m[k] = p.Version
			keys = append(keys, k)
		}
		return m, keys
	}
	b, bk := index(base)
	f, fk := index(final)
	var c Changes
	for _, k := range fk {
		old, ok := b[k]
		switch {
		case !ok:
			c.Added = append(c.Added, Change{k.m, k.n, k.a, "", f[k]})
		case old != f[k]:
			c.Upgraded = append(c.Upgraded, Change{k.m, k.n, k.a, old, f[k]})
		}
	}
	for _, k := range bk {
		if _, ok := f[k]; !ok {
			c.Removed = append(c.Removed, Change{k.m, k.n, k.a, b[k], ""})
		}
	}
	for _, l := range [][]Change{c.Added, c.Removed, c.Upgraded} {
		slices.SortFunc(l, func(x, y Change) int {
			return cmp.Or(cmp.Compare(x.Manager, y.Manager), cmp.Compare(x.Name, y.Name), cmp.Compare(x.Arch, y.Arch))
		})
	}
	return c
}

// String is a change as the build output prints it: "+ dpkg curl
// 7.88.1-10 amd64", "- ...", "~ dpkg curl 7.88.1-9 -> 7.88.1-10 amd64".
func (c Change) String() string {
	arch := ""
	if c.Arch != "" {
		arch = " " + c.Arch
	}
	switch {
	case c.From == "":
		return fmt.Sprintf("+ %s %s %s%s", c.Manager, c.Name, c.To, arch)
	case c.To == "":
		return fmt.Sprintf("- %s %s %s%s", c.Manager, c.Name, c.From, arch)
	}
	return fmt.Sprintf("~ %s %s %s -> %s%s", c.Manager, c.Name, c.From, c.To, arch)
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Added) == 0 && len(c.Removed) == 0 && len(c.Upgraded) == 0
}
