// Command ppbench is the Go half of bench/scrub-sparsify.sh: it runs the
// imagefactory-scrub and imagefactory-sparsify post-processors in-process,
// exactly as Packer calls them (Configure, then PostProcess on an
// artifact holding the disk), and prints their wall times.
//
//	ppbench -disk D -out O.qcow2    "<scrub seconds> <sparsify seconds>"
//
// The disk is scrubbed in place, then sparsified and converted to a
// zstd-compressed qcow2 at O. Progress goes to stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/scrub"
	"github.com/imagefactory/packer-plugin-imagefactory/post-processor/sparsify"
)

func main() {
	disk := flag.String("disk", "", "raw disk image, scrubbed in place")
	out := flag.String("out", "", "the qcow2 to write")
	flag.Parse()
	if *disk == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: ppbench -disk D -out O.qcow2")
		os.Exit(2)
	}
	// The script stops us with SIGTERM on Ctrl-C; a cancelled context
	// makes the post-processors release what they hold.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *disk, *out); err != nil {
		fmt.Fprintln(os.Stderr, "ppbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, disk, out string) error {
	ui := &packersdk.BasicUi{Reader: os.Stdin, Writer: os.Stderr, ErrorWriter: os.Stderr, PB: &packersdk.NoopProgressTracker{}}
	in := &packersdk.MockArtifact{FilesValue: []string{disk}}

	t0 := time.Now()
	var s scrub.PostProcessor
	if err := s.Configure(map[string]interface{}{}); err != nil {
		return err
	}
	scrubbed, _, _, err := s.PostProcess(ctx, ui, in)
	if err != nil {
		return err
	}
	tScrub := time.Since(t0)

	t0 = time.Now()
	var sp sparsify.PostProcessor
	if err := sp.Configure(map[string]interface{}{"format": "qcow2", "compression": "zstd", "output": out, "checksums": []string{}}); err != nil {
		return err
	}
	if _, _, _, err := sp.PostProcess(ctx, ui, scrubbed); err != nil {
		return err
	}
	fmt.Printf("%.6f %.6f\n", tScrub.Seconds(), time.Since(t0).Seconds())
	return nil
}
