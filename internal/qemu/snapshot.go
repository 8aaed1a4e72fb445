package qemu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// bootWatched are the image's paths a factory boot must leave as they were:
// the configuration the guest's network comes from, what cloud-init writes
// about the machine it ran on (sudoers for a created user, the installer's
// config), the resolver, the state network managers keep about the
// networks they met. An image booted in the factory must not adapt itself
// to the factory's hypervisor and network: it meets new ones in the cloud.
//
// A name ending in "/" is a tree (everything beneath it is recorded, and
// what appears in it is removed), a name with "*" in its last component a
// pattern (matches recorded, new matches removed), anything else one path.
var bootWatched = []string{
	"/etc/network/interfaces",
	"/etc/network/interfaces.d/",
	"/etc/systemd/network/",
	"/etc/netplan/",
	"/etc/NetworkManager/system-connections/",
	"/etc/NetworkManager/conf.d/",
	"/etc/sysconfig/network",
	"/etc/sysconfig/network-scripts/ifcfg-*",
	"/etc/udev/rules.d/*persistent-net*",
	"/etc/resolv.conf",
	"/etc/sudoers.d/90-cloud-init-users",
	"/etc/cloud/cloud.cfg.d/99-installer.cfg",
	"/var/lib/NetworkManager/",
	// /var/lib/wicked holds only leases, DUIDs and IAIDs: the scrub
	// operation dhcp-client-state removes all of it (FactoryBootOps).
}

// bootStateTrees are the trees of bootWatched where network daemons keep
// their state: leases, DUIDs, NetworkManager's secret_key (the machine's
// identity for stable addresses), the timestamps of its connections. A
// daemon writes there whenever it runs, while provisioners run and at the
// shutdown too, so a time there says nothing of a provisioner's intent:
// their files always go back as they were, and only a directory made
// after the mark (a package's, such as network-manager's
// /var/lib/NetworkManager) stays, empty.
var bootStateTrees = []string{"/var/lib/NetworkManager"}

// maxSnapshotFile bounds what one recorded file may hold: configuration
// is small, and the image is untrusted input.
const maxSnapshotFile = 4 << 20

// kinds of recorded entries.
const (
	kindMissing = iota
	kindFile
	kindDir
	kindLink
	kindOther // a device, a socket, a file too large: kept as the boot leaves it
)

// entry is one path as it was before the boot.
type entry struct {
	kind         int
	data         []byte // a file's content
	target       string // a symlink's
	mode         fs.FileMode
	uid, gid     int
	atime, mtime time.Time
}

// dirTimes is a directory that holds watched paths without being watched
// itself (/etc for /etc/resolv.conf): its times go back after the boot
// when it holds the same names as before, so that taking out what the
// boot added leaves no trace either.
type dirTimes struct {
	names        []string
	atime, mtime time.Time
}

// snapshot is what the watched paths held before the boot. restore puts
// that back, but for what provisioners changed after the mark.
type snapshot struct {
	entries  map[string]*entry
	trees    map[string]bool // watched trees (their new entries are removed)
	patterns []string
	parents  map[string]*dirTimes
	own      map[string]bool        // written by the build for its boot alone: always put back
	made     map[string]bool        // directories made for them outside the watched places
	blocks   map[string]*buildBlock // the build's lines in a file that is the image's too
	known    map[string]time.Time   // ctimes as the build left them before the boot
	Warnings []string
}

// buildBlock is what the build put in a file of the image's: the text as
// written, what it replaced there, and traces, strings that only the
// build's lines hold.
type buildBlock struct {
	text, replaced string
	traces         []string
}

func newSnapshot() *snapshot {
	return &snapshot{entries: map[string]*entry{}, trees: map[string]bool{}, parents: map[string]*dirTimes{},
		own: map[string]bool{}, made: map[string]bool{}, blocks: map[string]*buildBlock{}, known: map[string]time.Time{}}
}

// watch records each spec (bootWatched's syntax) as the image holds it now.
func (s *snapshot) watch(root *inroot.Root, specs ...string) error {
	for _, spec := range specs {
		var err error
		switch {
		case strings.HasSuffix(spec, "/"):
			p := path.Clean(spec)
			s.trees[p] = true
			if err = s.record(root, p, true); err == nil {
				err = s.recordParent(root, path.Dir(p))
			}
		case strings.Contains(path.Base(spec), "*"):
			s.patterns = append(s.patterns, spec)
			var ms []string
			if ms, err = globIn(root, spec); err == nil {
				for _, m := range ms {
					if err = s.record(root, m, false); err != nil {
						break
					}
				}
			}
			if err == nil {
				err = s.recordParent(root, path.Dir(spec))
			}
		default:
			if err = s.record(root, spec, false); err == nil {
				err = s.recordParent(root, path.Dir(spec))
			}
		}
		if err != nil {
			return fmt.Errorf("recording %s before the boot: %w", spec, err)
		}
	}
	return nil
}

// track records p, about to be written by the build, as it is now; when
// some of its parents are missing too it records the topmost missing one,
// so that the directories the build makes for p are removed again (those
// that hold nothing else then: see made). (A watched path records no
// missing parents: a provisioner may make them.)
func (s *snapshot) track(root *inroot.Root, p string) error {
	top := path.Clean(p)
	for {
		parent := path.Dir(top)
		if parent == top {
			break
		}
		ok, err := root.Exists(parent)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		top = parent
	}
	if _, watched := s.entries[top]; !watched && top != path.Clean(p) {
		s.made[top] = true
	}
	if err := s.record(root, top, false); err != nil {
		return err
	}
	return s.recordParent(root, path.Dir(top))
}

// record notes p (and, for a directory in a tree, everything beneath it).
func (s *snapshot) record(root *inroot.Root, p string, tree bool) error {
	if _, done := s.entries[p]; done {
		return nil
	}
	fi, err := root.Lstat(p)
	if isMissing(err) {
		s.entries[p] = &entry{kind: kindMissing}
		return nil
	}
	if err != nil {
		return err
	}
	e := &entry{mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
	s.known[p] = ctimeOf(fi)
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.uid, e.gid = int(st.Uid), int(st.Gid)
		e.atime, e.mtime = time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())
	}
	s.entries[p] = e
	switch {
	case fi.Mode().IsRegular() && fi.Size() > maxSnapshotFile:
		e.kind = kindOther
		s.Warnings = append(s.Warnings, fmt.Sprintf("%s is larger than %d MiB: not recorded, the boot may change it", p, maxSnapshotFile>>20))
	case fi.Mode().IsRegular():
		e.kind = kindFile
		if e.data, err = root.ReadFile(p); err != nil {
			return err
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		e.kind = kindLink
		if e.target, err = root.Readlink(p); err != nil {
			return err
		}
	case fi.IsDir():
		e.kind = kindDir
		if !tree {
			return nil
		}
		names, err := readDirNames(root, p)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := s.record(root, path.Join(p, n), true); err != nil {
				return err
			}
		}
	default:
		e.kind = kindOther
	}
	return nil
}

// recordParent notes the names and times of dir, which holds watched paths.
func (s *snapshot) recordParent(root *inroot.Root, dir string) error {
	if _, done := s.parents[dir]; done || s.entries[dir] != nil {
		return nil
	}
	fi, err := root.Lstat(dir)
	if isMissing(err) || (err == nil && !fi.IsDir()) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := readDirNames(root, dir)
	if err != nil {
		return err
	}
	sort.Strings(names)
	st := fi.Sys().(*syscall.Stat_t)
	s.parents[dir] = &dirTimes{names: names, atime: time.Unix(st.Atim.Unix()), mtime: time.Unix(st.Mtim.Unix())}
	s.known[dir] = ctimeOf(fi)
	return nil
}

// stamp notes the ctimes of p and its directories right after the build
// wrote p, before the boot: those are the host's clock, which may run
// ahead of the guest's, and restore must not take them for a
// provisioner's.
func (s *snapshot) stamp(root *inroot.Root, p string) {
	for p = path.Clean(p); ; p = path.Dir(p) {
		if fi, err := root.Lstat(p); err == nil {
			s.known[p] = ctimeOf(fi)
		}
		if p == "/" {
			return
		}
	}
}

// ctimeOf is the inode's change time, which no one can set: the kernel
// stamps it with the running system's clock on every change.
func ctimeOf(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Unix())
	}
	return time.Time{}
}

// Kept is the action reported for a path where the factory boot is
// undone that is left as a provisioner made it; the change's Op says how
// (changedBy, madeBy, removedBy).
const Kept scrub.Action = "kept"

// Why a path is kept.
const (
	changedBy = "changed by a provisioner"
	madeBy    = "made by a provisioner"
	removedBy = "removed by a provisioner"
)

// restore puts every recorded path back as it was (content, mode, owner,
// symlink target, and times when it had to be rewritten), removes what
// appeared in the watched trees and patterns, and reports each change
// under op. A second restore changes nothing more.
//
// mark is the guest's clock when SSH first answered, before any
// provisioner ran (zero: unknown, and everything is put back). Inode
// change times tell who changed a path: the guest's kernel stamps them
// with the guest's clock, the same clock the mark was read from, so the
// comparison holds whatever the host's clock says, and the boot's own
// writes (cloud-init's network configuration for the factory's NIC, udev's
// persistent-net rules, a DHCP client's resolv.conf) are done before sshd
// answers. A path whose ctime is after the mark was changed by a
// provisioner and is left as it is (reported as Kept), so is one that
// appeared after it, and one that disappeared from a directory changed
// after it (a provisioner may have removed it). What the build wrote for
// its boot goes whatever provisioners did: its own files and links
// always, its lines in a file of the image's (the ifupdown stanza in
// /etc/network/interfaces, the resolver in resolv.conf) cut out of a file
// a provisioner changed, or an error naming the file when they are no
// longer there intact. A file the boot changed and a provisioner then
// edited in place keeps both changes: a ctime tells only the last. What
// the guest itself writes there after SSH answered (a late cloud-init
// stage, a daemon at the shutdown) passes for a provisioner's too, but
// in the daemons' state trees (bootStateTrees).
func (s *snapshot) restore(root *inroot.Root, op string, mark time.Time) ([]scrub.Change, error) {
	r := &restoring{s: s, root: root, op: op, mark: mark,
		seen: map[string]*observed{}, keep: map[string]bool{}, settled: map[string]bool{}}

	paths := make([]string, 0, len(s.entries))
	for p := range s.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	matches := r.observeAll(paths)

	// What appeared: new entries in the trees, new pattern matches.
	var fresh []string
	for p := range s.trees {
		fresh = append(fresh, s.appeared(root, p)...)
	}
	for _, m := range matches {
		if _, ok := s.entries[m]; !ok {
			fresh = append(fresh, m)
		}
	}
	sort.Strings(fresh)
	for _, p := range fresh {
		r.trim(p)
	}

	// Parents first: a directory the boot replaced is back before its
	// entries are.
	for _, p := range paths {
		if r.under(p) {
			continue
		}
		e := s.entries[p]
		_, exists := r.seen[p]
		switch {
		case s.made[p]:
			// below, once what is watched beneath it is done
		case s.own[p]:
			r.putBack(p, e)
		case s.blocks[p] != nil && exists && r.byProvisioner(p):
			r.cut(p, s.blocks[p])
		case e.kind == kindMissing:
			if exists {
				r.trim(p)
			}
		case !exists:
			dir := path.Dir(p)
			for r.seen[dir] == nil && dir != "/" {
				dir = path.Dir(dir)
			}
			if r.byProvisioner(dir) {
				r.settled[p] = true
				r.kept(p, removedBy)
			} else {
				r.putBack(p, e)
			}
		case r.byProvisioner(p) && e.kind != kindOther:
			fi, err := root.Lstat(p)
			if err != nil {
				r.errs = append(r.errs, err)
			} else if !e.same(root, p, fi) {
				r.kept(p, changedBy)
				r.settled[p] = !fi.IsDir() // what it held is gone with it
			}
		default:
			r.putBack(p, e)
		}
	}

	for _, p := range paths {
		if s.made[p] && r.seen[p] != nil && !r.under(p) {
			r.prune(p)
		}
	}

	// Directory times last, deepest first: every change beneath them is
	// done. A directory a provisioner changed keeps the times it has.
	for i := len(paths) - 1; i >= 0; i-- {
		p := paths[i]
		if e := s.entries[p]; e.kind == kindDir && !r.under(p) && !r.byProvisioner(p) {
			r.errs = append(r.errs, setTimes(root, p, e.atime, e.mtime))
		}
	}
	for dir, d := range s.parents {
		names, err := readDirNames(root, dir)
		if err != nil || r.byProvisioner(dir) {
			continue
		}
		sort.Strings(names)
		if slices.Equal(names, d.names) {
			r.errs = append(r.errs, setTimes(root, dir, d.atime, d.mtime))
		}
	}
	return r.changes, errors.Join(r.errs...)
}

// restoring is one restore under way.
type restoring struct {
	s       *snapshot
	root    *inroot.Root
	op      string
	mark    time.Time
	seen    map[string]*observed // what the image held when the restore began
	keep    map[string]bool      // keeps' answers
	settled map[string]bool      // left as a provisioner made it, with all beneath
	changes []scrub.Change
	errs    []error
}

// observed is one path as the restore found it.
type observed struct {
	ctime time.Time
	dir   bool
	names []string // a directory's entries, once observed deep (non-nil)
}

// observeAll looks at everything restore decides on before it changes
// anything: taking out what the boot made moves the ctimes of the
// directories it was in. It returns the watched patterns' matches.
func (r *restoring) observeAll(paths []string) []string {
	for p := range r.s.trees {
		r.observe(p, true)
	}
	var matches []string
	for _, pat := range r.s.patterns {
		ms, err := globIn(r.root, pat)
		r.errs = append(r.errs, err)
		matches = append(matches, ms...)
		r.observe(path.Dir(pat), false)
	}
	for _, m := range matches {
		r.observe(m, true)
	}
	for _, p := range paths {
		r.observe(p, true)
		for a := path.Dir(p); ; a = path.Dir(a) { // up to the first directory that exists
			r.observe(a, false)
			if r.seen[a] != nil || a == "/" {
				break
			}
		}
	}
	for dir := range r.s.parents {
		r.observe(dir, false)
	}
	return matches
}

// observe notes p, and with deep everything beneath it; a path missing
// (or that cannot be looked at) is not noted.
func (r *restoring) observe(p string, deep bool) {
	o := r.seen[p]
	if o == nil {
		fi, err := r.root.Lstat(p)
		if err != nil {
			return
		}
		o = &observed{ctime: ctimeOf(fi), dir: fi.IsDir()}
		r.seen[p] = o
	}
	if !deep || !o.dir || o.names != nil {
		return
	}
	names, err := readDirNames(r.root, p)
	if err != nil {
		r.errs = append(r.errs, err)
		return
	}
	sort.Strings(names)
	o.names = append([]string{}, names...)
	for _, n := range names {
		r.observe(path.Join(p, n), true)
	}
}

// after: p's ctime is later than the mark, and not the one the build left
// before the boot.
func (r *restoring) after(p string) bool {
	o := r.seen[p]
	if r.mark.IsZero() || o == nil || !o.ctime.After(r.mark) {
		return false
	}
	k, ok := r.s.known[p]
	return !ok || !k.Equal(o.ctime)
}

// byProvisioner: a provisioner changed p (the daemons' state never counts).
func (r *restoring) byProvisioner(p string) bool { return r.after(p) && !inStateTree(p) }

func inStateTree(p string) bool {
	for _, t := range bootStateTrees {
		if p == t || strings.HasPrefix(p, t+"/") {
			return true
		}
	}
	return false
}

// under: p or one of its directories was left as a provisioner made it.
func (r *restoring) under(p string) bool {
	for ; ; p = path.Dir(p) {
		if r.settled[p] {
			return true
		}
		if p == "/" || p == "." {
			return false
		}
	}
}

// keeps: p, which appeared with the boot or after it, is a provisioner's
// or holds something of theirs. The build's own files never are.
func (r *restoring) keeps(p string) bool {
	if v, ok := r.keep[p]; ok {
		return v
	}
	o := r.seen[p]
	v := false
	if o != nil && !r.s.own[p] {
		v = r.byProvisioner(p) || o.dir && r.after(p)
		for _, n := range o.names {
			if r.keeps(path.Join(p, n)) {
				v = true
			}
		}
	}
	r.keep[p] = v
	return v
}

// keepsAll: p and everything beneath it are a provisioner's.
func (r *restoring) keepsAll(p string) bool {
	if !r.keeps(p) {
		return false
	}
	for _, n := range r.seen[p].names {
		if !r.keepsAll(path.Join(p, n)) {
			return false
		}
	}
	return true
}

// trim takes out what appeared at p, or beneath it, with the boot, and
// leaves what a provisioner made; it reports the topmost path of what it
// removes or keeps whole.
func (r *restoring) trim(p string) {
	r.settled[p] = true
	switch {
	case !r.keeps(p):
		r.note(p, scrub.Removed, r.root.RemoveAll(p))
		return
	case r.keepsAll(p):
		r.kept(p, madeBy)
		return
	}
	keptBelow := false
	for _, n := range r.seen[p].names {
		c := path.Join(p, n)
		keptBelow = r.keeps(c) || keptBelow
		r.trim(c)
	}
	if !keptBelow { // a provisioner changed the directory, not what the boot put in it
		r.kept(p, madeBy)
	}
}

// prune takes out of p, a directory made for the build's own files
// outside the watched places, those files and then the directories they
// leave empty; anything else there is not the build's (nor the boot's
// concern) and stays. It reports the topmost path it removes whole.
func (r *restoring) prune(p string) {
	if r.s.own[p] || r.onlyOwn(p) {
		r.note(p, scrub.Removed, r.root.RemoveAll(p))
		return
	}
	if names, err := readDirNames(r.root, p); err == nil {
		for _, n := range names {
			r.prune(path.Join(p, n))
		}
	}
}

// onlyOwn: p is a directory that holds nothing but the build's own files
// (or nothing), as it is now.
func (r *restoring) onlyOwn(p string) bool {
	names, err := readDirNames(r.root, p)
	if err != nil {
		return false
	}
	for _, n := range names {
		if c := path.Join(p, n); !r.s.own[c] && !r.onlyOwn(c) {
			return false
		}
	}
	return true
}

// cut takes the build's lines out of p, a file of the image's that a
// provisioner changed (back to what they replaced), and keeps the rest as
// the provisioner left it.
func (r *restoring) cut(p string, b *buildBlock) {
	fi, err := r.root.Lstat(p)
	var data []byte
	if err == nil && fi.Mode().IsRegular() {
		data, err = r.root.ReadFile(p)
	}
	if err != nil {
		r.errs = append(r.errs, err)
		return
	}
	text := string(data)
	i := strings.Index(text, b.text)
	rest := text
	if i >= 0 {
		rest = text[:i] + text[i+len(b.text):]
	}
	for _, t := range b.traces {
		if strings.Contains(rest, t) {
			r.errs = append(r.errs, fmt.Errorf("%s: a provisioner changed it during the build, and the lines the build "+
				"added for its boot, %q, are no longer there intact, so they cannot be cut out without guessing: "+
				"have the provisioner leave those lines as they are, or remove them all", p, strings.TrimLeft(b.text, "\n")))
			return
		}
	}
	if i < 0 { // the provisioner rewrote it: nothing of the build's left
		r.kept(p, changedBy)
		return
	}
	rest = text[:i] + b.replaced + text[i+len(b.text):]
	f, err := r.root.OpenFile(p, os.O_WRONLY|os.O_TRUNC|unix.O_NOFOLLOW, 0)
	if err == nil {
		_, err = f.WriteString(rest)
		err = errors.Join(err, f.Close())
	}
	r.note(p+" (the build's lines cut out, a provisioner's edits kept)", scrub.Changed, err)
}

func (r *restoring) putBack(p string, e *entry) {
	a, err := e.putBack(r.root, p)
	r.note(p, a, err)
}

func (r *restoring) note(p string, a scrub.Action, err error) {
	if err != nil {
		r.errs = append(r.errs, err)
	} else if a != "" {
		r.changes = append(r.changes, scrub.Change{Op: r.op, Path: p, Action: a})
	}
}

func (r *restoring) kept(p, why string) {
	r.changes = append(r.changes, scrub.Change{Op: why, Path: p, Action: Kept})
}

// appeared lists what is in the tree at p now and was not before.
func (s *snapshot) appeared(root *inroot.Root, p string) []string {
	if e := s.entries[p]; e == nil || e.kind != kindDir {
		return nil // missing before: putBack removes it whole
	}
	fi, err := root.Lstat(p)
	if err != nil || !fi.IsDir() {
		return nil
	}
	names, err := readDirNames(root, p)
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range names {
		c := path.Join(p, n)
		if _, ok := s.entries[c]; !ok {
			out = append(out, c)
		} else {
			out = append(out, s.appeared(root, c)...)
		}
	}
	return out
}

// putBack makes p what e recorded; it returns the change made, or "".
func (e *entry) putBack(root *inroot.Root, p string) (scrub.Action, error) {
	fi, err := root.Lstat(p)
	missing := isMissing(err)
	if err != nil && !missing {
		return "", err
	}
	if e.kind == kindMissing {
		if missing {
			return "", nil
		}
		return scrub.Removed, root.RemoveAll(p)
	}
	if e.kind == kindOther {
		return "", nil
	}
	action := scrub.Changed
	if missing {
		action = scrub.Created
	} else if e.same(root, p, fi) {
		return "", nil
	}
	switch e.kind {
	case kindDir:
		if !missing && !fi.IsDir() {
			if err := root.RemoveAll(p); err != nil {
				return "", err
			}
		}
		if missing || !fi.IsDir() {
			if err := root.Mkdir(p, 0o700); err != nil {
				return "", err
			}
		}
		if err := root.Lchown(p, e.uid, e.gid); err != nil {
			return "", err
		}
		return action, root.Chmod(p, e.mode)
	case kindLink:
		if !missing {
			if err := root.RemoveAll(p); err != nil {
				return "", err
			}
		}
		if err := root.Symlink(e.target, p); err != nil {
			return "", err
		}
		if err := root.Lchown(p, e.uid, e.gid); err != nil {
			return "", err
		}
	case kindFile:
		if err := e.writeBack(root, p, fi); err != nil {
			return "", err
		}
	}
	return action, setTimes(root, p, e.atime, e.mtime)
}

// same: p (described by fi) is what e recorded, times aside.
func (e *entry) same(root *inroot.Root, p string, fi fs.FileInfo) bool {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil || int(st.Uid) != e.uid || int(st.Gid) != e.gid {
		return false
	}
	switch e.kind {
	case kindDir:
		return fi.IsDir() && fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == e.mode
	case kindLink:
		t, err := root.Readlink(p)
		return fi.Mode()&fs.ModeSymlink != 0 && err == nil && t == e.target
	case kindFile:
		if !fi.Mode().IsRegular() || fi.Size() != int64(len(e.data)) || fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != e.mode {
			return false
		}
		data, err := root.ReadFile(p)
		return err == nil && string(data) == string(e.data)
	}
	return false
}

// writeBack rewrites a file with its recorded content, owner and mode: in
// place when it is still a regular file (its inode, links and extended
// attributes such as an SELinux label are kept), else as a new file.
func (e *entry) writeBack(root *inroot.Root, p string, fi fs.FileInfo) error {
	if fi != nil && fi.Mode().IsRegular() {
		f, err := root.OpenFile(p, os.O_WRONLY|os.O_TRUNC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		_, err = f.Write(e.data)
		if err == nil {
			err = f.Chown(e.uid, e.gid)
		}
		if err == nil { // after chown, which clears setuid and setgid
			err = f.Chmod(e.mode)
		}
		return errors.Join(err, f.Close())
	}
	if fi != nil {
		if err := root.RemoveAll(p); err != nil {
			return err
		}
	}
	if err := root.WriteFile(p, e.data, e.mode); err != nil {
		return err
	}
	if err := root.Lchown(p, e.uid, e.gid); err != nil {
		return err
	}
	return root.Chmod(p, e.mode)
}

// setTimes puts p's times back when they differ (a symlink's own).
func setTimes(root *inroot.Root, p string, atime, mtime time.Time) error {
	fi, err := root.Lstat(p)
	if err != nil {
		return nil // gone: nothing to put back
	}
	if fi.ModTime().Equal(mtime) {
		return nil
	}
	return root.Chtimes(p, atime, mtime)
}

// isMissing: err says a name is not in the image (or a component of it
// is not a directory).
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
