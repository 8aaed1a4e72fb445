// Command sessionbench is the Go half of bench/run.sh: it times our own
// code (internal/session, internal/diskimage) in-process, so the numbers
// hold no process start-up, and it reaps what a killed run left behind.
// bench/run.sh does the anchors, the medians and the table.
//
//	sessionbench session -disk D -mount M -state S -n N [-root-lv VG/LV | -root-subvol PATH] [-sandbox]   one time per line (s)
//	sessionbench copy -src A -dst B                       "<seconds> <method>"
//	sessionbench reap -state S                            releases a killed run's loops and mounts
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/session"
)

func main() {
	// -sandbox starts this binary again as the chroot's sandbox init.
	if sandbox.IsInit(os.Args) {
		os.Exit(sandbox.RunInit(os.Args[2:]))
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sessionbench session|copy|decompress|reap [flags]")
		os.Exit(2)
	}
	// run.sh stops us with SIGTERM on Ctrl-C; a cancelled context makes
	// the session and the copy clean up after themselves.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "session":
		err = benchSession(ctx, args)
	case "copy":
		err = benchCopy(ctx, args)
	case "decompress":
		err = benchDecompress(ctx, args)
	case "reap":
		err = reap(args)
	default:
		err = fmt.Errorf("unknown subcommand %q (want session, copy, decompress or reap)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sessionbench:", err)
		os.Exit(1)
	}
}

// benchSession prints the time of n open+chroot+close cycles, after one
// untimed warm-up cycle (the anchor in run.sh gets one too).
func benchSession(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("session", flag.ContinueOnError)
	disk := fl.String("disk", "", "raw disk image (MBR, root labelled cloudimg-rootfs)")
	mount := fl.String("mount", "", "where to mount the root")
	state := fl.String("state", "", "cleanup journal directory")
	n := fl.Int("n", 10, "timed runs")
	rootLV := fl.String("root-lv", "", "the root is this LVM LV (VG/LV), not the partition labelled cloudimg-rootfs")
	rootSubvol := fl.String("root-subvol", "", "the root is this btrfs subvolume (path from the top level), not the partition labelled cloudimg-rootfs")
	inSandbox := fl.Bool("sandbox", false, "run the command as the builder does: in the session's sandbox (namespaces, nsenter), stopped at Close")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *disk == "" || *mount == "" || *state == "" {
		return errors.New("session: -disk, -mount and -state are required")
	}
	for i := 0; i <= *n; i++ {
		d, err := sessionCycle(ctx, *disk, *mount, *state, *rootLV, *rootSubvol, *inSandbox)
		if err != nil {
			return fmt.Errorf("session run %d: %w", i, err)
		}
		if i > 0 {
			fmt.Printf("%.6f\n", d.Seconds())
		}
	}
	return nil
}

// sessionCycle is what one chroot build costs before and after its
// provisioners: journal open, session.Open with chroot mounts, one command
// in the chroot (with inSandbox: the sandbox started, the command run
// through nsenter, the sandbox stopped by Close), session Close, journal
// Close.
func sessionCycle(ctx context.Context, disk, mount, state, rootLV, rootSubvol string, inSandbox bool) (time.Duration, error) {
	start := time.Now()
	j, err := cleanup.Open(state, "bench")
	if err != nil {
		return 0, err
	}
	s, err := session.Open(ctx, session.Options{Disk: disk, Journal: j, MountPath: mount}, true)
	if err != nil {
		return 0, errors.Join(err, j.Close())
	}
	sub, _, isBtrfs := s.RootSubvolume()
	switch {
	case rootLV != "" && (s.Root == nil || s.Root.LV == nil || s.Root.LV.String() != rootLV):
		err = fmt.Errorf("root of %s is %v, want LV %s", disk, s.Root, rootLV)
	case rootSubvol != "" && (!isBtrfs || sub.Path != rootSubvol):
		err = fmt.Errorf("root of %s is %v (subvolume %q), want subvolume %s", disk, s.Root, sub.Path, rootSubvol)
	case rootLV == "" && rootSubvol == "" && (s.Root == nil || s.Root.FS.Label != "cloudimg-rootfs"):
		err = fmt.Errorf("root of %s is %v, want the partition labelled cloudimg-rootfs", disk, s.Root)
	}
	if err == nil {
		argv := []string{"chroot", mount, "/bin/true"}
		attr := &syscall.SysProcAttr{}
		if inSandbox {
			box, serr := s.Sandbox()
			if serr != nil {
				return 0, errors.Join(serr, s.Close(), j.Close())
			}
			argv = box.EnterArgs("/bin/true")
			box.ProcAttr(attr)
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.SysProcAttr = attr
		out, cerr := cmd.CombinedOutput()
		if cerr != nil {
			err = fmt.Errorf("%v: %v: %s", argv, cerr, out)
		}
	}
	err = errors.Join(err, s.Close(), j.Close())
	return time.Since(start), err
}

// benchCopy times one diskimage.Copy.
func benchCopy(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("copy", flag.ContinueOnError)
	src := fl.String("src", "", "source image")
	dst := fl.String("dst", "", "destination (must not exist)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *src == "" || *dst == "" {
		return errors.New("copy: -src and -dst are required")
	}
	start := time.Now()
	m, err := diskimage.Copy(ctx, *src, *dst, nil)
	d := time.Since(start)
	if err != nil {
		return err
	}
	fmt.Printf("%.6f %s\n", d.Seconds(), m)
	return nil
}

// benchDecompress times diskimage.Decompress (what the builder does with a
// compressed base image) and prints seconds.
func benchDecompress(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("decompress", flag.ContinueOnError)
	src := fl.String("src", "", "compressed image")
	dst := fl.String("dst", "", "destination")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *src == "" || *dst == "" {
		return errors.New("decompress: -src and -dst are required")
	}
	start := time.Now()
	if err := diskimage.Decompress(ctx, *src, *dst, nil); err != nil {
		return err
	}
	fmt.Printf("%.6f\n", time.Since(start).Seconds())
	return nil
}

// reap releases what a killed sessionbench recorded in its journals.
func reap(args []string) error {
	fl := flag.NewFlagSet("reap", flag.ContinueOnError)
	state := fl.String("state", "", "cleanup journal directory")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *state == "" {
		return errors.New("reap: -state is required")
	}
	rep, err := cleanup.Reap(*state)
	for _, l := range rep.Released {
		fmt.Println("reaped:", l)
	}
	return err
}
