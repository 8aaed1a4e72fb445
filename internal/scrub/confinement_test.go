package scrub

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// confinementOpts are the options of every confinement run: remove-paths
// and the first-boot service make those operations touch paths too.
var confinementOpts = Options{RemovePaths: []string{"/var/log/*", "/home/*/*"}, FirstbootScript: "#!/bin/sh\n"}

// describedPath finds the image paths an operation's description names
// (`/etc/machine-id`, `/var/log/*.log*`): removeOp and homeOp build theirs
// from the globs they remove, the others name what they edit.
var describedPath = regexp.MustCompile("`(/[^` ]*)`")

// instantiate turns a glob into a path it matches: each wildcard becomes
// "x" ("/var/log/*.log*" -> "/var/log/x.logx"), a class its first letter.
func instantiate(glob string) string {
	glob = regexp.MustCompile(`\[!?\^?(.)[^\]]*\]`).ReplaceAllString(glob, "$1")
	return strings.NewReplacer("*", "x", "?", "x", `\`, "").Replace(glob)
}

// touchedPaths lists every image path the scrub reaches, so the confinement
// test follows the operations when they change: the paths the operations'
// descriptions name (globs made concrete), and every name the image root
// resolves while all operations run on an image holding those paths and
// testFiles. Ancestors are included; "/" is not. kinds tells a directory
// (true) from anything else, as the path was in that image; contents are
// its regular files' bytes and modes, for decoys that an escaped operation
// would really change.
func touchedPaths(t *testing.T) (paths []string, dirs map[string]bool, files map[string]fileFact) {
	t.Helper()
	set := map[string]bool{}
	for _, op := range operations() {
		for _, m := range describedPath.FindAllStringSubmatch(op.Description, -1) {
			set[path.Clean(instantiate(m[1]))] = true
		}
	}
	delete(set, "/")
	described := map[string]string{}
	for p := range set {
		if !isAncestor(p, set) && !isAncestor(p, testFiles) {
			described[p] = "decoy " + p + "\n"
		}
	}
	// Two images: a systemd one with sshd (testFiles), and the same with
	// every described path present as a file, so every glob matches.
	dirs, files = map[string]bool{}, map[string]fileFact{}
	for _, extra := range []map[string]string{nil, described} {
		dir, root := newImage(t, systemdImage(), testLinks)
		for p, c := range extra {
			hp := filepath.Join(dir, p)
			if _, err := os.Lstat(hp); err == nil {
				continue // the busybox tree's or testFiles' own
			}
			if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(hp, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		err := filepath.WalkDir(dir, func(hp string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			p := "/" + strings.TrimPrefix(strings.TrimPrefix(hp, dir), "/")
			fi, err := os.Lstat(hp)
			switch {
			case err != nil:
				return err
			case fi.IsDir():
				dirs[p] = true
			case fi.Mode().IsRegular():
				if _, ok := files[p]; ok {
					break
				}
				data, err := os.ReadFile(hp)
				if err != nil {
					return err
				}
				files[p] = fileFact{string(data), fi.Mode().Perm()}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		root.SetTrace(func(name string) { set[name] = true })
		if _, err := Run(context.Background(), root, opsNamed(t, "all"), confinementOpts); err != nil {
			// Every operation still runs: a path named as a file that is
			// a directory in real images (/etc/runlevels) fails one step.
			t.Logf("scrub of a discovery image: %v", err)
		}
		root.SetTrace(nil)
	}
	for p := range set {
		for q := p; q != "/"; q = path.Dir(q) {
			set[q] = true
		}
	}
	delete(set, "/")
	for p := range set {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths, dirs, files
}

// systemdImage is testFiles on a systemd image with sshd, where the
// firstboot operation installs its unit.
func systemdImage() map[string]string {
	m := map[string]string{"/usr/sbin/sshd": "elf", "/usr/lib/systemd/systemd": "elf"}
	for p, c := range testFiles {
		m[p] = c
	}
	return m
}

type fileFact struct {
	data string
	perm fs.FileMode
}

// isAncestor tells whether a key of m lies beneath p.
func isAncestor[V any](p string, m map[string]V) bool {
	for q := range m {
		if strings.HasPrefix(q, p+"/") {
			return true
		}
	}
	return false
}

// treeManifest is fixture.DirManifest of dir (content, mode, owner, size,
// mtime, link count, link target) with each entry's inode number added: a
// file replaced by a new one with the same bytes differs too.
func treeManifest(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := fixture.DirManifest(t, dir)
	for rel, line := range m {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(dir, rel), &st); err != nil {
			t.Fatal(err)
		}
		m[rel] = fmt.Sprintf("%s ino=%d", line, st.Ino)
	}
	return m
}

// buildDecoys makes, under decoys, one decoy per touched path: a directory
// (holding a decoy-file of its own, so emptying it shows) where the image
// had a directory or the path has touched paths beneath it, otherwise a
// regular file with the image's bytes and mode (a shadow with live hashes,
// a machine-id, a hostname: what an escaped operation would rewrite).
func buildDecoys(t *testing.T, decoys string, paths []string, dirs map[string]bool, files map[string]fileFact) {
	t.Helper()
	set := map[string]bool{}
	for _, p := range paths {
		set[p] = true
	}
	for _, p := range paths {
		hp := filepath.Join(decoys, p)
		if dirs[p] || isAncestor(p, set) {
			if err := os.MkdirAll(hp, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(hp, "decoy-file"), []byte("decoy in "+p+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		f, ok := files[p]
		if !ok {
			f = fileFact{"decoy " + p + "\n", 0o644}
		}
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hp, []byte(f.data), f.perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(hp, f.perm); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConfinement aims hostile symlinks in the image at every path the
// scrub touches (files, directories and the parents of what it removes),
// each pointing at the matching decoy of a tree the test owns that mirrors
// the image (decoys/etc/shadow, decoys/var/log/..., decoys/root/.ssh/...),
// by absolute path and by relative path climbing out of the image
// (../../..). No link points at the real host. After all operations ran,
// the decoy tree must be unchanged to the inode.
func TestConfinement(t *testing.T) {
	paths, dirs, files := touchedPaths(t)
	// The discovery must have found what the operations are known to
	// touch; a hook that stopped recording would make the test vacuous.
	for _, want := range []string{"/etc/shadow", "/etc/machine-id", "/etc/hostname", "/etc/passwd", "/var/log",
		"/var/log/x.logx", "/root/.ssh", "/root/.bash_history", "/tmp", "/var/tmp", "/etc/ssh/x_host_x",
		"/var/lib/cloud", "/etc/systemd/system/multi-user.target.wants", "/var/lib/dbus/machine-id"} {
		if i := sort.SearchStrings(paths, want); i == len(paths) || paths[i] != want {
			t.Fatalf("the scrub's touched paths lack %s (found %d paths)", want, len(paths))
		}
	}
	decoys := t.TempDir()
	buildDecoys(t, decoys, paths, dirs, files)
	before := treeManifest(t, decoys)

	// A link and its descendants cannot be in one image, so each image
	// holds the links of one depth: /etc, /var...; /etc/shadow, /var/log...
	byDepth := map[int][]string{}
	for _, p := range paths {
		d := strings.Count(p, "/")
		byDepth[d] = append(byDepth[d], p)
	}
	depths := make([]int, 0, len(byDepth))
	for d := range byDepth {
		depths = append(depths, d)
	}
	sort.Ints(depths)
	linked := 0
	for _, depth := range depths {
		for _, relative := range []bool{false, true} {
			kind := "absolute"
			if relative {
				kind = "relative"
			}
			t.Run(fmt.Sprintf("depth-%d-%s", depth, kind), func(t *testing.T) {
				dir := t.TempDir()
				links := map[string]string{}
				for _, p := range byDepth[depth] {
					target := filepath.Join(decoys, p)
					if relative {
						rel, err := filepath.Rel(filepath.Dir(filepath.Join(dir, p)), target)
						if err != nil {
							t.Fatal(err)
						}
						target = rel
					}
					links[p] = target
				}
				_, root := newImageIn(t, dir, systemdImage(), links)
				for p, target := range links {
					if got, err := os.Readlink(filepath.Join(dir, p)); err != nil || got != target {
						t.Fatalf("hostile link %s = %q, %v; want -> %s", p, got, err, target)
					}
					linked++
				}
				if _, err := Run(context.Background(), root, opsNamed(t, "all"), confinementOpts); err != nil {
					t.Logf("Run (errors are acceptable here, escapes are not): %v", err)
				}
				if d := fixture.ManifestDiff(before, treeManifest(t, decoys), 20); len(d) > 0 {
					t.Fatalf("the scrub reached the decoys through the image's links:\n%s", strings.Join(d, "\n"))
				}
				// The operations still did their work, on the links.
				if _, ok := links["/etc/machine-id"]; ok {
					// uninitialized, or empty: /usr/lib is a link at this
					// depth, so the image has no systemd.
					fi, err := os.Lstat(filepath.Join(dir, "etc/machine-id"))
					if data, _ := os.ReadFile(filepath.Join(dir, "etc/machine-id")); err != nil || !fi.Mode().IsRegular() ||
						string(data) != "uninitialized\n" && string(data) != "" {
						t.Errorf("/etc/machine-id (was a link) = %q, %v; want the link replaced by a new file", data, err)
					}
				}
				for _, p := range []string{"/root/.ssh", "/etc/ssh/x_host_x", "/var/lib/dbus/machine-id", "/var/log/x.logx"} {
					if _, ok := links[p]; !ok {
						continue
					}
					if _, err := os.Lstat(filepath.Join(dir, p)); !os.IsNotExist(err) {
						t.Errorf("the link %s should be removed from the image: %v", p, err)
					}
				}
			})
		}
	}
	if want := 2 * len(paths); linked != want {
		t.Fatalf("%d hostile links made, want %d (every touched path, absolute and relative)", linked, want)
	}
	t.Logf("%d touched paths, each a hostile link (absolute and relative) to its decoy; decoy tree of %d entries unchanged", len(paths), len(before))

	// The check can fire: writing through one of the links, as an escaped
	// operation would, changes the decoy tree.
	dir := t.TempDir()
	newImageIn(t, dir, nil, map[string]string{"/etc/shadow": filepath.Join(decoys, "etc/shadow")})
	if err := os.WriteFile(filepath.Join(dir, "etc/shadow"), []byte("escaped\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if d := fixture.ManifestDiff(before, treeManifest(t, decoys), 20); len(d) != 1 || !strings.Contains(d[0], "/etc/shadow") {
		t.Fatalf("a write through the link to the decoy shadow is not seen: %q", d)
	}
}
