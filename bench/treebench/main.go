// Command treebench times internal/bootdisk in-process for bench/run.sh:
// from a root tree to a bootable raw disk (partition table, root
// filesystem filled from the tree, GRUB for BIOS and UEFI).
//
//	treebench -tree DIR -out FILE [-table gpt|mbr] [-fs ext4|xfs] -state S
//
// prints "<seconds> <disk bytes> <allocated bytes>". The disk is left for
// the caller to boot or delete.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

func main() {
	tree := flag.String("tree", "", "root tree directory")
	out := flag.String("out", "", "disk image to create")
	table := flag.String("table", "gpt", "gpt or mbr")
	fs := flag.String("fs", "ext4", "ext4 or xfs")
	state := flag.String("state", "", "cleanup journal directory")
	flag.Parse()
	if err := run(*tree, *out, *table, *fs, *state); err != nil {
		fmt.Fprintln(os.Stderr, "treebench:", err)
		os.Exit(1)
	}
}

func run(tree, out, table, fs, state string) (err error) {
	if tree == "" || out == "" || state == "" {
		return errors.New("-tree, -out and -state are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	j, err := cleanup.Open(state, "treebench")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, j.Close()) }()
	start := time.Now()
	res, err := bootdisk.Make(ctx, bootdisk.Options{Disk: out, Tree: tree, Table: table, FSType: fs, Free: 256 << 20, Journal: j, FillPath: out + ".fill"})
	if err != nil {
		os.Remove(out)
		return err
	}
	secs := time.Since(start).Seconds()
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil {
		return err
	}
	fmt.Printf("%.6f %d %d\n", secs, res.Size, st.Blocks*512)
	return nil
}
