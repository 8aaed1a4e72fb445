// Package bootstrap makes a root tree with debootstrap and caches it,
// keyed by what went into it, so that later builds (and other checkouts on
// the same machine) reuse it. No mirror is named: debootstrap uses its
// built-in default. A tree of another architecture than the host's is made
// in debootstrap's two stages (debootstrap(8), --foreign): the first
// downloads and unpacks on the host, the second configures the packages in
// the tree under qemu-user, through a binfmt_misc registration held for
// that stage only (internal/binfmt).
package bootstrap

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/binfmt"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/chrootprep"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// DefaultCacheDir is $IMAGEFACTORY_CACHE, else /var/cache/imagefactory
// (shared with scripts/debian-rootfs.sh).
func DefaultCacheDir() string {
	if d := os.Getenv("IMAGEFACTORY_CACHE"); d != "" {
		return d
	}
	return "/var/cache/imagefactory"
}

// Tools the package knows.
const Debootstrap = "debootstrap"

// Options say what tree to make.
type Options struct {
	Tool    string   // only "debootstrap"
	Suite   string   // bookworm
	Variant string   // minbase, buildd, fakechroot or "" (debootstrap's default)
	Include []string // extra packages
	// Arch is the tree's architecture (debootstrap's --arch); "" for the
	// host's.
	Arch     arch.Arch
	CacheDir string // DefaultCacheDir() if empty
	Journal  *cleanup.Journal
	Log      func(string) // debootstrap's progress lines; may be nil
}

// treeVersion changes when what Tree does to debootstrap's output changes,
// so older cached trees are not reused.
const treeVersion = "1"

// Key identifies a tree by its inputs.
func (o Options) Key() string {
	inc := append([]string(nil), o.Include...)
	sort.Strings(inc)
	machine := hostArch()
	if o.Foreign() {
		machine = string(o.Arch) // never a uname -m: the host's keys stay
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{treeVersion, o.Tool, o.Suite, o.Variant, strings.Join(inc, ","), machine}, "\x00")))
	return hex.EncodeToString(sum[:6])
}

// Foreign says the tree is of another architecture than the host's: its
// second stage runs under emulation.
func (o Options) Foreign() bool { return o.Arch != "" && o.Arch != arch.Host() }

func hostArch() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Machine[:])
}

// Path is where the tree for o is cached.
func (o Options) Path() string {
	v := o.Variant
	if v == "" {
		v = "default"
	}
	if o.Foreign() {
		v += "-" + string(o.Arch)
	}
	return filepath.Join(o.cacheDir(), fmt.Sprintf("%s-%s-%s-%s", o.Tool, o.Suite, v, o.Key()))
}

func (o Options) cacheDir() string {
	if o.CacheDir != "" {
		return o.CacheDir
	}
	return DefaultCacheDir()
}

// Tree returns the cached tree for o, making it first if needed (under a
// lock: concurrent builds wait for one debootstrap). When the build making
// it is killed, a waiting one takes the lock, releases what the killed one
// left (its journal, in o.Journal's state directory) and makes the tree in
// a work directory of its own; the killed one's debootstrap dies with it.
// cached says whether it was there already. The tree must be treated as
// read-only.
func Tree(ctx context.Context, o Options) (tree string, cached bool, err error) {
	if o.Tool != Debootstrap {
		return "", false, fmt.Errorf("bootstrap tool %q is not supported; use %q", o.Tool, Debootstrap)
	}
	if o.Journal == nil {
		return "", false, errors.New("bootstrap: no cleanup journal")
	}
	final := o.Path()
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", false, fmt.Errorf("bootstrap cache %s: %w", filepath.Dir(final), err)
	}
	unlock, err := lock(ctx, filepath.Join(filepath.Dir(final), "."+filepath.Base(final)+".lock"))
	if err != nil {
		return "", false, err
	}
	defer unlock()
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return final, true, nil
	}
	// The lock is ours because the build that held it ended, maybe killed
	// while making this tree, after this build's own reap at its start:
	// release what it left (mounts in its work tree, processes) now.
	rep, rerr := cleanup.Reap(filepath.Dir(o.Journal.Path()))
	for _, line := range rep.Released {
		o.log("I: released what a killed build left: " + line)
	}
	if rerr != nil {
		o.log("W: could not release everything a killed build left: " + rerr.Error())
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", false, errors.New("debootstrap not found (apt-get install debootstrap)")
	}
	if err := o.make(ctx, final); err != nil {
		return "", false, err
	}
	return final, false, nil
}

// WorkGlob matches the directories where trees for o are made before
// they are renamed into the cache: one per attempt,
// .work-<tree>-<pid>-<random>, so that what a killed attempt left running
// never writes into the next attempt's tree.
func WorkGlob(o Options) string {
	return filepath.Join(filepath.Dir(o.Path()), ".work-"+filepath.Base(o.Path())+"-*")
}

// workLog starts the log line that names an attempt's work directory.
const workLog = "I: Making the tree in "

func workDir(o Options) string {
	return strings.TrimSuffix(WorkGlob(o), "*") + fmt.Sprintf("%d-%s", os.Getpid(), rand.Text()[:8])
}

// make runs debootstrap in a work directory beside final and renames the
// tree into place once whole. Everything debootstrap mounts in the tree and
// every process it leaves in it is journaled first.
func (o Options) make(ctx context.Context, final string) (err error) {
	j := o.Journal
	// A killed run's work directory is its journal's to remove (Tree
	// reaped it); this run's is its own.
	work := workDir(o)
	var handles []cleanup.Handle
	releaseAll := func() error {
		var errs []error
		for i := len(handles) - 1; i >= 0; i-- {
			errs = append(errs, j.Release(handles[i]))
		}
		handles = nil
		return errors.Join(errs...)
	}
	defer func() { err = errors.Join(err, releaseAll()) }()
	tree := filepath.Join(work, "tree")
	entries := []cleanup.Entry{cleanup.FileEntry(work)}
	for _, m := range []string{"proc", "sys", "dev", "dev/pts"} {
		entries = append(entries, cleanup.MountEntry(filepath.Join(tree, m), m, "debootstrap"))
	}
	entries = append(entries, cleanup.ChrootEntry(tree))
	for _, e := range entries {
		h, err := j.Take(e)
		if err != nil {
			return err
		}
		handles = append(handles, h)
	}
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	o.log(workLog + work)

	args := []string{}
	if o.Foreign() {
		// The first stage only downloads and unpacks: nothing of the tree
		// runs on the host.
		args = append(args, "--arch="+string(o.Arch), "--foreign")
	} else if o.Arch != "" {
		args = append(args, "--arch="+string(o.Arch))
	}
	if o.Variant != "" {
		args = append(args, "--variant="+o.Variant)
	}
	if len(o.Include) > 0 {
		args = append(args, "--include="+strings.Join(o.Include, ","))
	}
	args = append(args, o.Suite, tree) // no mirror: debootstrap's default
	if err := o.debootstrap(ctx, "debootstrap", args); err != nil {
		return err
	}
	if o.Foreign() {
		err = o.secondStage(ctx, tree) // makes the initramfs under emulation
	} else {
		err = o.initramfs(ctx, tree)
	}
	if err != nil {
		return err
	}
	if err := tidy(tree); err != nil {
		return fmt.Errorf("bootstrap: tidying the tree: %w", err)
	}
	// Release the mounts and processes (not the work directory) before the
	// tree moves.
	keep := handles[0]
	handles = handles[1:]
	if err := releaseAll(); err != nil {
		handles = []cleanup.Handle{keep}
		return err
	}
	handles = []cleanup.Handle{keep}
	if err := os.Rename(tree, final); err != nil {
		return fmt.Errorf("bootstrap: caching the tree as %s: %w", final, err)
	}
	return nil
}

// secondStage configures the unpacked packages of a foreign tree: the
// tree's own debootstrap, run in the chroot by qemu-user through a
// binfmt_misc registration released when it ends, then a check that the
// tree's binaries are of the architecture asked for.
func (o Options) secondStage(ctx context.Context, tree string) (err error) {
	release, how, err := binfmt.Enable(o.Journal, o.Arch)
	if err != nil {
		return fmt.Errorf("bootstrap %s: the second stage runs the tree's programs: %w", o.Arch, err)
	}
	defer func() {
		if rerr := release(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("bootstrap: releasing the %s interpreter: %w", o.Arch, rerr))
		}
	}()
	o.log(fmt.Sprintf("I: Second stage of the %s tree under emulation (%s)", o.Arch, how))
	start := time.Now()
	if err := o.debootstrap(ctx, "chroot", []string{tree, "/debootstrap/debootstrap", "--second-stage"}); err != nil {
		return err
	}
	o.log(fmt.Sprintf("I: Second stage done in %s", time.Since(start).Round(time.Second)))
	if err := o.initramfs(ctx, tree); err != nil {
		return err
	}
	r, err := inroot.Open(tree)
	if err != nil {
		return err
	}
	defer r.Close()
	got, err := arch.OfImage(r)
	if err != nil {
		return fmt.Errorf("bootstrap: the %s tree: %w", o.Arch, err)
	}
	if got != o.Arch {
		return fmt.Errorf("bootstrap: asked for an %s tree, debootstrap made one whose binaries are %s", o.Arch, got)
	}
	return nil
}

// noInitramfs is in the environment of debootstrap and of its second
// stage: the kernel's postinst hook (/etc/kernel/postinst.d/initramfs-tools,
// initramfs-tools 0.142) then makes no initramfs, so the initramfs-tools
// trigger that follows finds none to update. Otherwise the initramfs is
// made twice, by the hook and again by the trigger: under qemu-user each
// took 9 to 15 minutes (mkinitramfs runs some 15,000 short processes, each
// costing qemu-user about 30 ms to start), two thirds of an arm64 second
// stage.
const noInitramfs = "INITRD=No"

// initramfs makes, once, the initramfs of every kernel in the tree
// (update-initramfs -c -k all, in the chroot: under qemu-user for a
// foreign tree, whose binfmt registration the caller holds). A tree
// without initramfs-tools (no kernel) is left as it is.
func (o Options) initramfs(ctx context.Context, tree string) error {
	if _, err := os.Stat(filepath.Join(tree, "usr/sbin/update-initramfs")); err != nil {
		return nil
	}
	start := time.Now()
	if err := o.run(ctx, []string{"PATH=" + chrootprep.Path}, "chroot", []string{tree, "update-initramfs", "-c", "-k", "all"}); err != nil {
		return fmt.Errorf("bootstrap: making the tree's initramfs: %w", err)
	}
	o.log(fmt.Sprintf("I: initramfs made in %s", time.Since(start).Round(time.Second)))
	return nil
}

func (o Options) log(line string) {
	if o.Log != nil {
		o.Log(line)
	}
}

// debootstrap runs name (debootstrap, or chroot for a second stage) with
// noInitramfs in its environment.
func (o Options) debootstrap(ctx context.Context, name string, args []string) error {
	return o.run(ctx, []string{noInitramfs}, name, args)
}

// run runs name with env added to the host's environment, in its own
// process group (killed whole on cancel), handing its output lines to Log
// and keeping the last ones for the error.
func (o Options) run(ctx context.Context, env []string, name string, args []string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	// Pdeathsig: killed with the build (kill -9 of the plugin), rather
	// than go on writing into a tree the next build makes anew.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			tail = append(tail, line)
			if len(tail) > 15 {
				tail = tail[1:]
			}
			if o.Log != nil {
				o.Log(line)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("debootstrap: %w", ctx.Err())
		}
		return fmt.Errorf("%s %s: %v:\n%s", name, strings.Join(args, " "), err, strings.Join(tail, "\n"))
	}
	return nil
}

// tidy removes what debootstrap copied from the build host or what would
// make every instance alike: the host's resolv.conf and hostname, the
// machine id systemd's postinst made, package caches and indexes.
func tidy(tree string) error {
	writes := map[string]string{
		"etc/resolv.conf": "",
		"etc/hostname":    "localhost\n",
		"etc/machine-id":  "",
	}
	for name, content := range writes {
		p := filepath.Join(tree, name)
		if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
			continue // a symlink (resolv.conf to systemd-resolved): keep it
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(tree, "var/lib/dbus/machine-id"))
	for _, glob := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"} {
		matches, _ := filepath.Glob(filepath.Join(tree, glob))
		for _, m := range matches {
			os.Remove(m)
		}
	}
	return nil
}

// lock takes an exclusive flock on path, waiting while ctx allows.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("bootstrap cache lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("bootstrap cache lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
