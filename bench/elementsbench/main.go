// Command elementsbench times the imagefactory-elements provisioner on a
// root tree through the builder's chroot communicator: Prepare (discovery,
// expansion) and Provision (image facts, hooks tree, helpers, every phase
// with its bind mount). It prints one wall time in seconds per run.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/builder/imagefactory"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/provisioner/elements"
)

func main() {
	tree := flag.String("tree", "", "root tree to run in")
	path := flag.String("elements-path", "", "directory of the elements")
	names := flag.String("elements", "", "comma-separated elements")
	runs := flag.Int("runs", 5, "runs")
	verbose := flag.Bool("v", false, "show the provisioner's output on stderr")
	flag.Parse()
	log.SetOutput(io.Discard) // the SDK's UI logs every line too
	if *verbose {
		uiOut = os.Stderr
	}
	if err := run(*tree, *path, strings.Split(*names, ","), *runs); err != nil {
		fmt.Fprintln(os.Stderr, "elementsbench:", err)
		os.Exit(1)
	}
}

var uiOut io.Writer = io.Discard

func run(tree, path string, names []string, runs int) error {
	root, err := inroot.Open(tree)
	if err != nil {
		return err
	}
	defer root.Close()
	comm := &imagefactory.Communicator{Root: root, Wrapper: func(s string) (string, error) { return s, nil },
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}}
	ui := &packersdk.BasicUi{Reader: strings.NewReader(""), Writer: uiOut, ErrorWriter: uiOut}
	for i := 0; i < runs; i++ {
		start := time.Now()
		var p elements.Provisioner
		if err := p.Prepare(map[string]interface{}{"elements": names, "elements_path": []string{path}}); err != nil {
			return err
		}
		if err := p.Provision(context.Background(), ui, comm, map[string]interface{}{"MountPath": tree}); err != nil {
			return err
		}
		fmt.Printf("%.6f\n", time.Since(start).Seconds())
	}
	return nil
}
