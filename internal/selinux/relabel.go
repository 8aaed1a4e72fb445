package selinux

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// Runner runs argv inside the image's chroot (the builder's sandbox, with
// /proc mounted: libselinux sets labels through /proc/self/fd) and returns
// its combined output.
type Runner func(ctx context.Context, argv []string) (string, error)

// Mode values of selinux_relabel.
const (
	ModeAuto      = "auto"      // relabel what changed when the image wants SELinux
	ModeFull      = "full"      // relabel every filesystem of the image
	ModeFirstboot = "firstboot" // touch /.autorelabel
	ModeOff       = "off"       // nothing
)

// Modes lists the values of selinux_relabel, default first.
var Modes = []string{ModeAuto, ModeFull, ModeFirstboot, ModeOff}

// CheckMode validates a selinux_relabel value ("" is auto).
func CheckMode(m string) error {
	for _, v := range Modes {
		if m == v || m == "" {
			return nil
		}
	}
	return fmt.Errorf("selinux_relabel = %q: must be one of %s", m, strings.Join(Modes, ", "))
}

// ErrFullWithoutConfig refuses selinux_relabel = "full" on an image
// without SELinux.
var ErrFullWithoutConfig = fmt.Errorf("selinux_relabel = \"full\": the image has no %s (no SELinux policy to label with); use \"auto\" or \"off\"", ConfigPath)

// Request is one relabel: what to do, where, and with what.
type Request struct {
	Root *inroot.Root
	Mode string // a Modes value; "" is auto
	// Changed lists the image paths the build changed (ModeAuto). A
	// directory among them is relabelled with its whole subtree.
	Changed []string
	// Chroot runs the image's own setfiles in the chroot; nil when nothing
	// of the image may run (the scrub post-processor): the host's setfiles
	// is used.
	Chroot Runner
	// Skip are image paths of mounts that are not the image's own (the
	// chroot's /proc, /sys, /dev, /run and chroot_mounts): never relabelled.
	Skip []string
	// HostSetfiles is the host's setfiles; default "setfiles" on PATH.
	HostSetfiles string
}

// Outcome says what was done, in one line for the build's output
// ("SELinux: relabelled 3 changed paths with the image's setfiles (policy
// default)"), and warns when the image's SELinux cannot be honoured.
type Outcome struct {
	Summary string
	Warning string
	Paths   int // paths handed to setfiles (each recursed when a directory)
}

// Relabel does what req.Mode asks. Errors: a *NoPolicyError when the image
// asks for a policy it lacks (a warning instead for ModeAuto and
// SELINUX=permissive: such an image boots with SELinux off until a policy
// is installed, and a policy installed later needs a full relabel
// anyway), a setfiles failure with its output.
func Relabel(ctx context.Context, req Request) (Outcome, error) {
	mode := req.Mode
	if mode == "" {
		mode = ModeAuto
	}
	if err := CheckMode(mode); err != nil {
		return Outcome{}, err
	}
	if mode == ModeOff {
		return Outcome{Summary: "SELinux: selinux_relabel = \"off\": no relabelling"}, nil
	}
	if mode == ModeFirstboot {
		if err := req.Root.WriteFile(AutorelabelPath, nil, 0o644); err != nil {
			return Outcome{}, fmt.Errorf("selinux_relabel = \"firstboot\": %w", err)
		}
		return Outcome{Summary: "SELinux: created " + AutorelabelPath + ": the image relabels itself at first boot"}, nil
	}
	cfg, ok, err := ReadConfig(req.Root)
	if err != nil {
		return Outcome{}, err
	}
	if mode == ModeAuto && !ok {
		return Outcome{Summary: "SELinux: the image has no " + ConfigPath + ": nothing to relabel"}, nil
	}
	if mode == ModeAuto && !cfg.Wants() {
		return Outcome{Summary: fmt.Sprintf("SELinux: SELINUX=%s in the image's %s: nothing to relabel", orNone(string(cfg.Mode)), ConfigPath)}, nil
	}
	if !ok {
		return Outcome{}, ErrFullWithoutConfig
	}
	fc, err := FindPolicy(req.Root, cfg)
	var np *NoPolicyError
	if errors.As(err, &np) && mode == ModeAuto && cfg.Mode == Permissive {
		return Outcome{Summary: "SELinux: nothing relabelled", Warning: "Warning: " + err.Error()}, nil
	}
	if err != nil {
		return Outcome{}, err
	}

	paths := req.Changed
	what := "changed path"
	if mode == ModeFull {
		if paths, err = imageMounts(req.Root.Path(), req.Skip); err != nil {
			return Outcome{}, err
		}
		what = "filesystem"
	}
	if len(paths) == 0 {
		return Outcome{Summary: fmt.Sprintf("SELinux: nothing changed to relabel (policy %s)", cfg.Type)}, nil
	}
	tool, err := setfiles(ctx, req, fc, paths)
	if err != nil {
		return Outcome{}, err
	}
	s := fmt.Sprintf("SELinux: relabelled %d %s%s with %s (policy %s)", len(paths), what, plural(len(paths)), tool, cfg.Type)
	if mode == ModeFull {
		s = fmt.Sprintf("SELinux: relabelled the whole tree (%s) with %s (policy %s)", strings.Join(paths, ", "), tool, cfg.Type)
	}
	return Outcome{Summary: s, Paths: len(paths)}, nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// maxBatch bounds the bytes of paths given to one setfiles: the chroot's
// command is one sh -c argument, and Linux caps one argument at 128 KiB
// (MAX_ARG_STRLEN).
const maxBatch = 96 << 10

// setfiles runs setfiles over paths (image paths; directories recurse),
// the image's in the chroot when it has one and may run, else the host's
// with -r ROOT. It names the tool it used.
//
// Paths go as arguments, not with -f: setfiles of policycoreutils 3.4 has
// no -0, and a name may hold a newline. setfiles passes each argument to
// glob(3) with GLOB_BRACE|GLOB_TILDE (restore.c's process_glob), so glob's
// metacharacters are escaped. setfiles never follows a symlink below its
// argument (FTS_PHYSICAL) nor crosses into another filesystem (it sets
// SELINUX_RESTORECON_XDEV).
func setfiles(ctx context.Context, req Request, fc string, paths []string) (string, error) {
	img := ""
	if req.Chroot != nil {
		img = FindImageSetfiles(req.Root)
	}
	if img != "" {
		for _, batch := range batches(paths, "") {
			argv := append([]string{img, fc}, batch...)
			if out, err := req.Chroot(ctx, argv); err != nil {
				return "", fmt.Errorf("relabelling with the image's %s: %w\n%s", img, err, tail(out))
			}
		}
		return "the image's setfiles", nil
	}
	host := req.HostSetfiles
	if host == "" {
		host = "setfiles"
	}
	bin, err := exec.LookPath(host)
	if err != nil {
		return "", fmt.Errorf("the image has no setfiles (%s) and the host has none either (%v): install policycoreutils on the host", strings.Join(ImageSetfiles, ", "), err)
	}
	root := req.Root.Path()
	// The spec file, resolved inside the image (a symlink in it must not
	// hand setfiles a host file).
	real, err := req.Root.RealPath(fc)
	if err != nil {
		return "", fmt.Errorf("the image's SELinux file contexts: %w", err)
	}
	// Each path's parent resolved inside the image too: the kernel would
	// follow a symlink in the middle of ROOT/a/b out of the image.
	resolved := make([]string, 0, len(paths))
	for _, p := range paths {
		dir, base := path.Split(path.Clean("/" + p))
		if base == "" {
			resolved = append(resolved, "/")
			continue
		}
		d, err := req.Root.RealPath(dir)
		if err != nil {
			return "", fmt.Errorf("relabelling %s: %w", p, err)
		}
		resolved = append(resolved, path.Join(d, base))
	}
	for _, batch := range batches(resolved, root) {
		argv := append([]string{"-r", root, root + real}, batch...)
		cmd := exec.CommandContext(ctx, bin, argv...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("relabelling with the host's %s -r %s: %w\n%s", bin, root, err, tail(string(out)))
		}
	}
	return "the host's setfiles -r", nil
}

// batches splits paths (prefixed with prefix and glob-escaped) into
// argument lists of at most maxBatch bytes.
func batches(paths []string, prefix string) [][]string {
	var out [][]string
	var cur []string
	size := 0
	for _, p := range paths {
		a := globEscape(prefix + p)
		if size+len(a) > maxBatch && len(cur) > 0 {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, a)
		size += len(a) + 1
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// globEscape makes glob(3) take s literally.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\*?[]{}~`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// imageMounts returns the image paths of the filesystems mounted at and
// under root (the root and its fstab mounts, read from
// /proc/self/mountinfo), but those in or under skip. setfiles does not
// cross filesystems, so a full relabel names each one.
func imageMounts(root string, skip []string) ([]string, error) {
	mps, err := cleanup.MountPointsUnder(root)
	if err != nil {
		return nil, err
	}
	// A plain directory tree, not a mount point itself, is one too.
	seen := map[string]bool{"/": true}
	for _, mp := range mps {
		p := "/" + strings.TrimPrefix(strings.TrimPrefix(mp, root), "/")
		if !under(p, skip) {
			seen[p] = true
		}
	}
	out := keys(seen)
	sort.Strings(out)
	return out, nil
}

// under reports whether p is one of dirs or beneath one.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		d = path.Clean("/" + d)
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// WithNewParents adds to paths their parent directories that carry no
// label: in a labelled image those were made by whoever wrote the paths
// (the scrub's firstboot makes /usr/local/libexec, and reports only the
// files in it). A parent replaces its children (setfiles recurses).
func WithNewParents(root *inroot.Root, paths []string) []string {
	set := map[string]bool{}
	for _, p := range paths {
		set[path.Clean("/"+p)] = true
		for d := path.Dir(path.Clean("/" + p)); d != "/"; d = path.Dir(d) {
			if labelled(root, d) {
				break
			}
			set[d] = true
		}
	}
	var out []string
	for p := range set {
		if !under(path.Dir(p), keys(set)) || p == "/" {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// labelled reports whether the image path p has a security.selinux
// attribute (resolved inside the image; an error counts as labelled, so
// nothing is added on doubt).
func labelled(root *inroot.Root, p string) bool {
	f, err := root.PathFD(p)
	if err != nil {
		return true
	}
	defer f.Close()
	_, err = unix.Getxattr(inroot.ProcPath(f), "security.selinux", nil)
	return !errors.Is(err, unix.ENODATA)
}
