package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/btrfs"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fstab"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
)

// btrfsLook is what a look inside a btrfs partition found: its subvolumes
// and the one that holds the root.
type btrfsLook struct {
	subvols []btrfs.Subvolume // without the top level
	def     btrfs.Subvolume   // the default subvolume
	root    btrfs.Subvolume   // the root's subvolume (def when none was found)
	found   bool              // an fstab names root, or root holds /etc/fstab
	why     string            // how root was chosen, for the build's log
	rootOpt []string          // options of the / entry of root's fstab
}

func init() { holders["btrfs"] = holdsBtrfs }

// holdsBtrfs is holdsRootCandidate with the subvolumes FindRoot saw inside
// the btrfs, for the no-root message.
func holdsBtrfs(s *Session, p *Partition) Holding {
	h := holdsRootCandidate(s, p)
	if p.btrfs != nil && len(p.btrfs.subvols) > 0 {
		h.Detail = []string{p.btrfs.describe()}
	}
	return h
}

// describe names the subvolumes and the default one.
func (l *btrfsLook) describe() string {
	names := make([]string, len(l.subvols))
	for i, s := range l.subvols {
		names[i] = s.Path
	}
	what := "subvolumes " + strings.Join(names, ", ")
	if l.def.ID != btrfs.TopLevelID {
		what += "; default subvolume " + l.def.Path
	}
	return what
}

// lookBtrfs finds the subvolume holding the root of the btrfs on p: the
// one mount_options names (subvol= or subvolid=), else the
// one the image's own fstab mounts on / (subvol= or subvolid=; none: the
// default subvolume, as the kernel does at boot), else the default
// subvolume if it holds /etc/fstab, else the one subvolume that does. It
// mounts the top level (subvolid=5) read-only for the look, where every
// subvolume shows as a directory; fstabs are read from the default
// subvolume first, then the top level, then the others by ID.
func (s *Session) lookBtrfs(ctx context.Context, p *Partition) (*btrfsLook, error) {
	if p.btrfs != nil {
		return p.btrfs, nil
	}
	look := &btrfsLook{}
	err := s.withProbeMount(p, "subvolid=5", func(st *mounts.Stack) error {
		top := st.Root()
		var err error
		if look.subvols, err = btrfs.List(ctx, top.Path()); err != nil {
			return err
		}
		if look.def, err = btrfs.Default(ctx, top.Path()); err != nil {
			return err
		}
		look.root = look.def
		// The user's choice first (root_partition with mount_options).
		if named, ok, err := btrfs.Named(s.opts.MountOptions, look.subvols); err != nil || ok {
			if err != nil {
				return fmt.Errorf("mount_options: %w", err)
			}
			look.root, look.found, look.why = named, true, "mount_options names it"
			return nil
		}
		cands := []btrfs.Subvolume{look.def}
		for _, c := range append([]btrfs.Subvolume{btrfs.TopLevel}, look.subvols...) {
			if c.ID != look.def.ID {
				cands = append(cands, c)
			}
		}
		var holders []btrfs.Subvolume
		for _, c := range cands {
			entries, ok, err := readSubvolFstab(top, c)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			e, ok := rootEntry(entries)
			if ok && !s.mayBe(e, p) {
				continue // an fstab that puts / elsewhere: not a root here
			}
			holders = append(holders, c)
			if !ok {
				continue
			}
			named, ok, err := btrfs.Named(e.Options, look.subvols)
			if err != nil {
				return fmt.Errorf("the / entry of /etc/fstab in subvolume %s (line %d: %s): %w", c, e.Line, e, err)
			}
			look.found, look.rootOpt = true, e.Options
			if ok {
				look.root = named
				look.why = fmt.Sprintf("the fstab in %s mounts / from it (line %d)", c, e.Line)
			} else {
				look.why = fmt.Sprintf("the default subvolume: the fstab in %s mounts / without subvol= (line %d)", c, e.Line)
			}
			return nil
		}
		switch {
		case len(holders) == 0:
			look.why = "the default subvolume (no subvolume holds /etc/fstab)"
		case holders[0].ID == look.def.ID || len(holders) == 1:
			look.root, look.found = holders[0], true
			look.why = "it holds /etc/fstab"
		default:
			names := make([]string, len(holders))
			for i, h := range holders {
				names[i] = h.String()
			}
			return fmt.Errorf("subvolumes %s hold /etc/fstab, none of them mounts / from this filesystem and none is the default subvolume; "+
				"choose one with mount_options = [\"subvolid=N\"]", strings.Join(names, ", "))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("looking inside the btrfs on %s: %w", p, err)
	}
	p.btrfs = look
	return look, nil
}

// readSubvolFstab reads etc/fstab of subvolume c through the top level's
// root: a regular file, its symlinks resolved inside the subvolume.
func readSubvolFstab(top *inroot.Root, c btrfs.Subvolume) ([]fstab.Entry, bool, error) {
	r := top
	if c.ID != btrfs.TopLevelID {
		// The path comes from the filesystem's own tree: real directories.
		// Checked anyway, so a crafted image cannot lead elsewhere.
		if real, err := top.RealPath(c.Path); err != nil || real != "/"+c.Path {
			return nil, false, nil
		}
		var err error
		if r, err = inroot.Open(top.Path() + "/" + c.Path); err != nil {
			return nil, false, err
		}
		defer r.Close()
	}
	fi, err := r.Stat("/etc/fstab")
	if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.Mode().IsRegular() {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	data, err := r.ReadFile("/etc/fstab")
	if err != nil {
		return nil, false, err
	}
	entries, err := fstab.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, false, fmt.Errorf("/etc/fstab in subvolume %s: %w", c, err)
	}
	return entries, true, nil
}

func rootEntry(entries []fstab.Entry) (fstab.Entry, bool) {
	for _, e := range entries {
		if e.File == "/" {
			return e, true
		}
	}
	return fstab.Entry{}, false
}

// mayBe tells whether the fstab entry e could mount p: btrfs (or auto)
// and not a device that is another partition of the disk.
func (s *Session) mayBe(e fstab.Entry, p *Partition) bool {
	if e.VFSType != "btrfs" && e.VFSType != "auto" {
		return false
	}
	q := s.resolve(e)
	return q == nil || q == p
}

// errProbeMount wraps the error of a look's mount(2): the filesystem does
// not mount here.
var errProbeMount = errors.New("cannot mount it for a look")

// withProbeMount mounts p read-only with data at a private directory next
// to mount_path, calls f, and unmounts. For btrfs it skips the replay of
// the tree log where the kernel knows rescue=nologreplay (5.9+), as
// noload does for ext4.
func (s *Session) withProbeMount(p *Partition, data string, f func(*mounts.Stack) error) error {
	dir, err := s.probeDir()
	if err != nil {
		return err
	}
	defer os.Remove(dir) // empty once unmounted
	flags := uintptr(unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC)
	st := mounts.NewStack(journalAdapter{s.opts.Journal})
	err = unix.EINVAL
	if p.FS.Type == "btrfs" {
		err = st.MountRoot(p.Device, p.FS.Type, dir, flags, data+",rescue=nologreplay")
	}
	if errors.Is(err, unix.EINVAL) {
		err = st.MountRoot(p.Device, p.FS.Type, dir, flags, data)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errProbeMount, err)
	}
	return errors.Join(f(st), st.UnmountAll())
}

// RootSubvolume is the btrfs subvolume the root is mounted from, and why
// it was chosen; ok is false when the root is not btrfs.
func (s *Session) RootSubvolume() (sub btrfs.Subvolume, why string, ok bool) {
	if s.Root == nil || s.Root.btrfs == nil {
		return btrfs.Subvolume{}, "", false
	}
	return s.Root.btrfs.root, s.Root.btrfs.why, true
}

// RootDefaultSubvolume is the default subvolume of the root's btrfs (the
// zero Subvolume when the root is not btrfs).
func (s *Session) RootDefaultSubvolume() btrfs.Subvolume {
	if s.Root == nil || s.Root.btrfs == nil {
		return btrfs.Subvolume{}
	}
	return s.Root.btrfs.def
}

// btrfsRootData is the mount data that mounts the root's subvolume, with
// the compression the image's fstab gives / (so files written in the
// chroot are stored as the booted system would store them). A subvol= or
// subvolid= in mount_options wins.
func (s *Session) btrfsRootData() []string {
	l := s.Root.btrfs
	if l == nil {
		return nil
	}
	for _, o := range s.opts.MountOptions {
		if strings.HasPrefix(o, "subvol=") || strings.HasPrefix(o, "subvolid=") {
			return nil
		}
	}
	data := []string{l.root.MountData()}
	for _, o := range l.rootOpt {
		if strings.HasPrefix(o, "compress") {
			data = append(data, o)
		}
	}
	return data
}
