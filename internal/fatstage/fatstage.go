// Package fatstage gives provisioners a FAT filesystem (a Raspberry Pi
// firmware partition on /boot/firmware, an EFI system partition on
// /boot/efi) to read and write on a host whose kernel cannot mount vfat
// (MACHINE.md: this one cannot; FUSE works).
//
// How: the FAT's files are copied out with GNU mtools into a directory
// (the session mounts a tmpfs the size of the partition there, where the
// fstab says), provisioners work on ordinary files, and at release the
// differences (files added, changed or removed, directories made or
// removed) are written back with mtools, then fsck.fat -n must find the
// FAT as clean as before. Nothing writes the FAT before that point, so a
// failed, cancelled or killed build leaves it as it was, and the journal
// needs no FAT-specific entry: the tmpfs mount is an ordinary journaled
// mount the reaper unmounts.
//
// Why not a FUSE server (measured 2026-12-01 on a 256 MiB FAT32 made by
// mkfs.vfat 4.2, then fsck.fat -n):
//   - go-diskfs v1.9.4 (FAT12/16/32 through one code base) leaves the FAT
//     inconsistent after most writes: the FSInfo free count is never
//     updated ("Free cluster summary wrong" after any allocation), Remove
//     and a Rename over an existing file leak the old file's clusters
//     ("Reclaimed 1 unused cluster"), and an empty file (create, O_TRUNC)
//     keeps a cluster ("File size is 0 bytes, cluster chain length is > 0
//     bytes"); Rename only works within one directory; an open File
//     writes back a snapshot of its parent directory, losing entries
//     another handle added meanwhile. Fixing that means owning a FAT
//     writer, which is outside this project's core.
//   - Debian's fusefat 0.1a-3 (rw "experimental"): `echo >> config.txt`
//     fails with EIO, and `sed -i` on cmdline.txt leaves an entry whose
//     8.3 name is "~1".
//   - mtools 4.0.32 (Debian's `mtools`), the tool mkosi and Yocto's wic
//     populate ESPs with, applied the same changes with fsck.fat clean
//     (this package's tests).
//
// What a FAT cannot hold is refused at write-back with the path named:
// symbolic links, device nodes, FIFOs, sockets, names with characters FAT
// forbids, and two names in one directory that differ only in case; so
// are names beyond ASCII, which mtools does not round-trip. Owners
// and permission bits are not stored by FAT: the staged tree shows the
// ones the fstab's uid=, gid=, umask=, fmask= and dmask= give (vfat(5)
// defaults: root, umask 022), and chmod or chown there is not written
// back.
package fatstage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// Types are the filesystem types (blkid's and fstab's) this package serves.
var Types = map[string]bool{"vfat": true, "msdos": true, "fat": true}

// ErrUnreadable says mtools cannot read the device as a FAT filesystem
// (damaged, or not FAT at all).
var ErrUnreadable = errors.New("not a FAT filesystem mtools can read")

// Perms are the owner and modes the staged files get, as vfat(5)'s mount
// options give them.
type Perms struct {
	UID, GID     int
	FMask, DMask os.FileMode
}

// DefaultPerms are vfat's defaults for a mount by root: owner 0:0, the
// mounting process's umask (022 for init and mount(8)).
var DefaultPerms = Perms{FMask: 0o022, DMask: 0o022}

// PermsFromOptions reads uid=, gid=, umask=, fmask= and dmask= (masks in
// octal, as vfat(5)) from fstab options; others are ignored. A malformed
// value is an error naming it.
func PermsFromOptions(opts []string) (Perms, error) {
	p := DefaultPerms
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			continue
		}
		switch k {
		case "uid", "gid":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return p, fmt.Errorf("fstab option %s: not a numeric id", o)
			}
			if k == "uid" {
				p.UID = n
			} else {
				p.GID = n
			}
		case "umask", "fmask", "dmask":
			n, err := strconv.ParseUint(v, 8, 32)
			if err != nil || n > 0o777 {
				return p, fmt.Errorf("fstab option %s: not an octal mask", o)
			}
			m := os.FileMode(n)
			switch k {
			case "umask":
				p.FMask, p.DMask = m, m
			case "fmask":
				p.FMask = m
			case "dmask":
				p.DMask = m
			}
		}
	}
	return p, nil
}

// node is what the stage knew of one path when it was copied out.
type node struct {
	dir   bool
	size  int64
	mtime time.Time
	sum   [sha256.Size]byte
}

// Stage is a FAT filesystem copied into a directory.
type Stage struct {
	Device string // the FAT: a partition's loop device or an image file
	Dir    string // the directory holding the copy
	// Repro, when not nil, makes WriteBack reproducible: modification
	// times later than the epoch are clamped to it, and mtools takes
	// the epoch as its clock (SOURCE_DATE_EPOCH, which mtools 4.0.32
	// honours) for the entries it makes. Nil: the files' times and the
	// clock, as before.
	Repro  *repro.Source
	perms  Perms
	before map[string]node   // by path relative to Dir, "/"-separated
	attrs  map[string]string // mattrib flags (of "rsh") of paths that have some
	clean  bool              // fsck.fat -n found nothing before
	check  string            // what fsck.fat -n said before, when not clean
}

// Extract copies every file and directory of the FAT on dev into dir (an
// empty directory) with their modification times, gives them perms, and
// remembers what it copied. It fails with ErrUnreadable when mtools cannot
// read dev as FAT. Needs mtools (Debian package mtools) and fsck.fat
// (dosfstools).
func Extract(ctx context.Context, dev, dir string, perms Perms) (*Stage, error) {
	if err := Readable(ctx, dev); err != nil {
		return nil, err
	}
	s := &Stage{Device: dev, Dir: dir, perms: perms, before: map[string]node{}}
	var err error
	if s.clean, s.check, err = fsck(ctx, dev); err != nil {
		return nil, err
	}
	list, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	if len(list) > 0 {
		if s.attrs, err = attributes(ctx, dev); err != nil {
			return nil, err
		}
		if _, err := mtools(ctx, "mcopy", "-s", "-m", "-n", "-i", dev, "::/*", dir+"/"); err != nil {
			return nil, fmt.Errorf("copying the FAT's files out: %w", err)
		}
	}
	err = filepath.WalkDir(walkRoot(dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		n, err := s.adopt(p, d.IsDir(), rel == ".")
		if err == nil && rel != "." {
			s.before[filepath.ToSlash(rel)] = n
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("staging the FAT's files: %w", err)
	}
	// mcopy copies what mdir lists; a file it skipped would later look
	// deleted by the build, and be deleted.
	for _, p := range list {
		if _, ok := s.before[p]; !ok {
			return nil, fmt.Errorf("copying the FAT's files out: mcopy did not copy /%s", p)
		}
	}
	return s, nil
}

// Readable fails with ErrUnreadable when mtools cannot read dev as a FAT
// filesystem.
func Readable(ctx context.Context, dev string) error {
	if _, err := mtools(ctx, "minfo", "-i", dev, "::"); err != nil {
		return fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	return nil
}

// list returns the paths (relative, "/"-separated) of every file and
// directory of the FAT, hidden and system ones included.
func (s *Stage) list(ctx context.Context) ([]string, error) {
	out, err := mtools(ctx, "mdir", "-/", "-b", "-a", "-i", s.Device, "::/")
	if err != nil {
		// mdir fails on an empty root; minfo already said it is a FAT.
		if strings.Contains(err.Error(), `"::/" not found`) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing the FAT: %w", err)
	}
	var paths []string
	for _, l := range strings.Split(out, "\n") {
		if p := strings.Trim(strings.TrimPrefix(l, "::/"), "/"); p != "" && strings.HasPrefix(l, "::/") {
			paths = append(paths, p)
		}
	}
	return paths, nil
}

// attributes reads the read-only, system and hidden attributes of every
// path of the FAT (mattrib -/ prints "  A  SH      ::/PATH").
func attributes(ctx context.Context, dev string) (map[string]string, error) {
	out, err := mtools(ctx, "mattrib", "-/", "-i", dev, "::/")
	if err != nil {
		return nil, fmt.Errorf("reading the FAT's attributes: %w", err)
	}
	attrs := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		flags, p, ok := strings.Cut(l, "::/")
		if !ok {
			continue
		}
		var a string
		for _, f := range "RSH" {
			if strings.ContainsRune(flags, f) {
				a += strings.ToLower(string(f))
			}
		}
		if p = strings.Trim(p, "/"); a != "" && p != "" {
			attrs[p] = a
		}
	}
	return attrs, nil
}

// adopt gives a copied path its owner and mode and returns what it holds.
func (s *Stage) adopt(p string, dir, top bool) (node, error) {
	mode := 0o777 &^ s.perms.FMask
	if dir {
		mode = 0o777 &^ s.perms.DMask
	}
	if err := os.Lchown(p, s.perms.UID, s.perms.GID); err != nil {
		return node{}, err
	}
	if err := os.Chmod(p, mode); err != nil {
		return node{}, err
	}
	if top || dir {
		return node{dir: dir}, nil
	}
	return fileNode(p)
}

// walkRoot makes WalkDir descend into dir even when dir is a symbolic link
// (a /proc/PID/fd/N path: WalkDir does not follow its root).
func walkRoot(dir string) string { return dir + "/." }

func fileNode(p string) (node, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return node{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return node{}, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return node{}, err
	}
	n := node{size: fi.Size(), mtime: fi.ModTime()}
	copy(n.sum[:], h.Sum(nil))
	return n, nil
}

// Changes is what WriteBack did (or would do), paths relative to the FAT's
// root.
type Changes struct {
	Removed, Made, Copied []string
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return len(c.Removed)+len(c.Made)+len(c.Copied) == 0 }

func (c Changes) String() string {
	if c.Empty() {
		return "no change"
	}
	return fmt.Sprintf("%d file(s) written, %d directory(ies) made, %d path(s) removed", len(c.Copied), len(c.Made), len(c.Removed))
}

// Plan compares the directory with what was copied out and returns what
// WriteBack would write. It fails, naming the path inside the FAT, on what
// a FAT cannot hold.
func (s *Stage) Plan() (Changes, error) {
	var c Changes
	now := map[string]node{}
	var errs []error
	err := filepath.WalkDir(walkRoot(s.Dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.Dir, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if !d.IsDir() && !d.Type().IsRegular() {
			errs = append(errs, fmt.Errorf("/%s is a %s: a FAT filesystem cannot hold one", rel, kindOf(d.Type())))
			return nil
		}
		if err := validName(d.Name()); err != nil {
			errs = append(errs, fmt.Errorf("/%s: %w", rel, err))
			return nil
		}
		if d.IsDir() {
			now[rel] = node{dir: true}
			return nil
		}
		n, err := fileNode(p)
		if err != nil {
			return err
		}
		now[rel] = n
		return nil
	})
	if err != nil {
		return c, err
	}
	errs = append(errs, caseClashes(now)...)
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	for p, b := range s.before {
		n, ok := now[p]
		if !ok || n.dir != b.dir {
			c.Removed = append(c.Removed, p)
		}
	}
	for p, n := range now {
		b, ok := s.before[p]
		switch {
		case n.dir && (!ok || !b.dir):
			c.Made = append(c.Made, p)
		case !n.dir && (!ok || b.dir || b.size != n.size || b.sum != n.sum || !b.mtime.Equal(n.mtime)):
			c.Copied = append(c.Copied, p)
		}
	}
	// A removed directory goes with its contents: drop what lies below it.
	sort.Strings(c.Removed)
	var removed []string
	for _, p := range c.Removed {
		if len(removed) > 0 && s.before[removed[len(removed)-1]].dir && strings.HasPrefix(p, removed[len(removed)-1]+"/") {
			continue
		}
		removed = append(removed, p)
	}
	c.Removed = removed
	slices.SortFunc(c.Made, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
	sort.Strings(c.Copied)
	return c, nil
}

// WriteBack writes the changes made in the directory into the FAT with
// mtools: removals first (they free space), then new directories, parents
// first, then new and changed files with their modification times. Then
// fsck.fat -n must find the FAT clean, if it was clean before.
func (s *Stage) WriteBack(ctx context.Context) (Changes, error) {
	c, err := s.Plan()
	if err != nil {
		return c, err
	}
	for _, p := range c.Removed {
		cmd := "mdel"
		if s.before[p].dir {
			cmd = "mdeltree"
		}
		if _, err := s.mtools(ctx, cmd, "-i", s.Device, "::/"+p); err != nil {
			return c, fmt.Errorf("removing /%s: %w", p, err)
		}
	}
	for _, p := range c.Made {
		if _, err := s.mtools(ctx, "mmd", "-i", s.Device, "::/"+p); err != nil {
			return c, fmt.Errorf("making /%s: %w", p, err)
		}
	}
	if err := s.clamp(c.Copied); err != nil {
		return c, err
	}
	// One mcopy per directory (a firmware update rewrites hundreds of
	// overlays; measured for 280 files of 4 KB: one call each 2.9 s, one
	// call 0.06 s). -D o: overwrite
	// a file of that name (its long or its short name).
	for _, batch := range byDirectory(c.Copied, 256) {
		args := []string{"-m", "-D", "o", "-i", s.Device}
		for _, p := range batch {
			args = append(args, filepath.Join(s.Dir, filepath.FromSlash(p)))
		}
		target := "::/"
		if dir := path.Dir(batch[0]); dir != "." {
			target += dir + "/"
		}
		if _, err := s.mtools(ctx, "mcopy", append(args, target)...); err != nil {
			return c, fmt.Errorf("writing %s: %w", strings.Join(slashed(batch), ", "), err)
		}
	}
	// mcopy's overwrite drops the read-only, system and hidden attributes
	// the file had: give them back.
	for _, p := range c.Copied {
		if a := s.attrs[p]; a != "" && !s.before[p].dir {
			args := []string{"-i", s.Device}
			for _, f := range a {
				args = append(args, "+"+string(f))
			}
			if _, err := s.mtools(ctx, "mattrib", append(args, "::/"+p)...); err != nil {
				return c, fmt.Errorf("restoring the attributes of /%s: %w", p, err)
			}
		}
	}
	if c.Empty() {
		return c, nil
	}
	if err := syncDevice(s.Device); err != nil {
		return c, err
	}
	if !s.clean {
		return c, nil
	}
	if clean, out, err := fsck(ctx, s.Device); err != nil || !clean {
		return c, errors.Join(err, fmt.Errorf("fsck.fat -n finds the FAT damaged after writing the changes back: %s", out))
	}
	return c, nil
}

// clamp sets the modification times of the staged files later than the
// epoch to the epoch (mcopy -m writes them into the FAT); nothing
// without a Source.
func (s *Stage) clamp(paths []string) error {
	if !s.Repro.Enabled() {
		return nil
	}
	for _, p := range paths {
		f := filepath.Join(s.Dir, filepath.FromSlash(p))
		fi, err := os.Lstat(f)
		if err != nil {
			return err
		}
		if m := s.Repro.Clamp(fi.ModTime()); !m.Equal(fi.ModTime()) {
			if err := os.Chtimes(f, m, m); err != nil {
				return fmt.Errorf("clamping the time of /%s: %w", p, err)
			}
		}
	}
	return nil
}

// mtools is the package's mtools with the Stage's epoch in the
// environment.
func (s *Stage) mtools(ctx context.Context, name string, args ...string) (string, error) {
	return mtoolsEnv(ctx, s.Repro.Env(), name, args...)
}

// byDirectory groups paths (sorted) by their directory, at most max a
// group.
func byDirectory(paths []string, max int) [][]string {
	var out [][]string
	for _, p := range paths {
		if n := len(out); n > 0 && len(out[n-1]) < max && path.Dir(out[n-1][0]) == path.Dir(p) {
			out[n-1] = append(out[n-1], p)
			continue
		}
		out = append(out, []string{p})
	}
	return out
}

func slashed(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = "/" + p
	}
	return out
}

// syncDevice flushes what mtools wrote. mtools does not fsync, and a loop
// device's page cache is not written to its backing file by LOOP_CLR_FD
// while the detaching process is its only opener (measured: the changes
// were lost), so the write-back must reach the disk file here.
func syncDevice(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("flushing %s: %w", dev, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("flushing %s: %w", dev, err)
	}
	return nil
}

// Clean reports whether fsck.fat -n found the FAT clean when it was copied
// out, and what it said otherwise.
func (s *Stage) Clean() (bool, string) { return s.clean, s.check }

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device node"
	}
	return "special file"
}

// validName refuses names a FAT long name cannot hold (Microsoft's FAT
// specification, "File Name Restrictions"; Linux's vfat driver refuses the
// same).
func validName(name string) error {
	for _, r := range name {
		if r < 0x20 || strings.ContainsRune(`"*/:<>?\|`, r) {
			return fmt.Errorf("the name holds %q, which FAT forbids", r)
		}
		// Measured with mtools 4.0.32: "café.txt" comes back as
		// "cafÉ.txt" (C.UTF-8) or "caf_(C).txt" (no locale).
		if r > 0x7e {
			return fmt.Errorf("the name holds %q: mtools does not store names beyond ASCII faithfully; use an ASCII name", r)
		}
	}
	if strings.TrimRight(name, ". ") != name {
		return errors.New("the name ends with a dot or a space, which FAT drops")
	}
	if len([]rune(name)) > 255 {
		return errors.New("the name is longer than FAT's 255 characters")
	}
	return nil
}

// caseClashes finds names in one directory that differ only in case:
// FAT matches names without case, so one would overwrite the other.
func caseClashes(now map[string]node) []error {
	seen := map[string]string{}
	var errs []error
	keys := make([]string, 0, len(now))
	for p := range now {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	for _, p := range keys {
		k := path.Dir(p) + "/" + strings.ToUpper(path.Base(p))
		if o, ok := seen[k]; ok {
			errs = append(errs, fmt.Errorf("/%s and /%s differ only in case: FAT holds only one of them", o, p))
			continue
		}
		seen[k] = p
	}
	return errs
}

// fsck runs fsck.fat -n (no change) on dev.
// It reports clean when fsck.fat exits 0, and what it said; err only when
// it could not run.
func fsck(ctx context.Context, dev string) (clean bool, out string, err error) {
	b, err := exec.CommandContext(ctx, "fsck.fat", "-n", dev).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, strings.TrimSpace(string(b)), nil
	case errors.As(err, &exit):
		return false, strings.TrimSpace(string(b)), nil
	case errors.Is(err, exec.ErrNotFound):
		return false, "", errors.New("fsck.fat not found (Debian package dosfstools)")
	}
	return false, "", fmt.Errorf("fsck.fat -n %s: %w", dev, err)
}

// mtools runs one mtools command. TZ=UTC: FAT stores local times, and
// Linux's vfat reads them as UTC by default (vfat(5) tz=); both ways of the
// copy must agree. MTOOLS_SKIP_CHECK: a partition's geometry is not a
// floppy's.
func mtools(ctx context.Context, name string, args ...string) (string, error) {
	return mtoolsEnv(ctx, nil, name, args...)
}

// mtoolsEnv is mtools with env added.
func mtoolsEnv(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(os.Environ(), "TZ=UTC", "MTOOLS_SKIP_CHECK=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("%s not found (Debian package mtools)", name)
		}
		return stdout.String(), fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
