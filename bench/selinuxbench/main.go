// Command selinuxbench times, for bench/run.sh, the relabel of what a build
// changed (internal/selinux: the ctime walk against a snapshot, then the
// host's setfiles -r over the changed paths) against a full `setfiles -r`
// of the same labelled tree.
//
//	selinuxbench -tree DIR
//
// writes into DIR what the acceptance test's provisioners write
// (/usr/local/bin/tool, /etc/app.conf, /var/www/html/index.html), then
// prints "<changed seconds> <walks seconds> <full seconds> <paths> <inodes>":
// the relabel of the changed paths with both walks (the snapshot before
// provisioning, 25 ms of it a wait, and the walk after), the two walks
// alone, the full setfiles, the paths relabelled, and the inodes the walk
// looked at.
// The tree keeps the files (each run overwrites them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/selinux"
)

func main() {
	tree := flag.String("tree", "", "a labelled root tree with an SELinux policy")
	flag.Parse()
	if err := run(*tree); err != nil {
		fmt.Fprintln(os.Stderr, "selinuxbench:", err)
		os.Exit(1)
	}
}

func run(tree string) error {
	if tree == "" {
		return errors.New("-tree is required")
	}
	root, err := inroot.Open(tree)
	if err != nil {
		return err
	}
	defer root.Close()
	// Start from a tree whose build files are gone, so each run writes new ones.
	for _, p := range []string{"/usr/local/bin/tool", "/etc/app.conf", "/var/www"} {
		if err := root.RemoveAll(p); err != nil {
			return err
		}
	}
	start := time.Now()
	snap, err := selinux.Snap(root, nil)
	if err != nil {
		return err
	}
	snapTime := time.Since(start)
	for p, data := range map[string]string{
		"/usr/local/bin/tool":      "#!/bin/sh\necho tool\n",
		"/etc/app.conf":            "setting=1\n",
		"/var/www/html/index.html": "<p>factory</p>\n",
	} {
		if err := root.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := root.WriteFile(p, []byte(data), 0o644); err != nil {
			return err
		}
	}

	start = time.Now()
	ch, err := snap.Changed(root)
	if err != nil {
		return err
	}
	walk := time.Since(start) + snapTime
	out, err := selinux.Relabel(context.Background(), selinux.Request{Root: root, Changed: ch.Paths})
	if err != nil {
		return err
	}
	changed := time.Since(start) + snapTime
	if out.Paths == 0 {
		return fmt.Errorf("nothing relabelled: %s", out.Summary)
	}

	cfg, _, err := selinux.ReadConfig(root)
	if err != nil {
		return err
	}
	fc := filepath.Join(tree, selinux.FileContexts(cfg.Type))
	start = time.Now()
	if b, err := exec.Command("setfiles", "-r", tree, fc, tree).CombinedOutput(); err != nil {
		return fmt.Errorf("setfiles: %v\n%s", err, b)
	}
	full := time.Since(start)
	fmt.Printf("%.6f %.6f %.6f %d %d\n", changed.Seconds(), walk.Seconds(), full.Seconds(), out.Paths, ch.Walked)
	return nil
}
