// Command sbombench times internal/sbom in-process for bench/run.sh: the
// builder's SBOM step on a root tree, Read (os-release, kernels, every
// package database) then SPDX (the JSON document).
//
//	sbombench -tree DIR
//
// prints "<seconds> <packages> <kernels> <document bytes>". It fails when
// the inventory is incomplete or empty: a fast read of nothing measures
// nothing.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sbom"
)

func main() {
	tree := flag.String("tree", "", "root tree directory")
	flag.Parse()
	if err := run(*tree); err != nil {
		fmt.Fprintln(os.Stderr, "sbombench:", err)
		os.Exit(1)
	}
}

func run(tree string) error {
	if tree == "" {
		return errors.New("-tree is required")
	}
	start := time.Now()
	inv, err := sbom.Read(tree)
	if err != nil {
		return err
	}
	doc, err := inv.SPDX("sbombench", repro.New(0, "sbombench"))
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	if len(inv.Incomplete) > 0 {
		return fmt.Errorf("incomplete inventory of %s: %q", tree, inv.Incomplete)
	}
	if len(inv.Packages) == 0 {
		return fmt.Errorf("no package found in %s", tree)
	}
	fmt.Printf("%.6f %d %d %d\n", secs, len(inv.Packages), len(inv.Kernels), len(doc))
	return nil
}
