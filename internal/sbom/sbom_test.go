package sbom

import (
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// TestBadDatabases: a database that cannot be read is one line of
// Incomplete naming its path in the image, and Read still returns the
// packages of the other databases. Symlinks out of the root are not
// followed: they resolve inside it, where nothing is.
func TestBadDatabases(t *testing.T) {
	good := rpmTree(t)
	realDB := filepath.Join(good, fixture.RPMDBPath, "rpmdb.sqlite")
	hostStatus := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(hostStatus, []byte("Package: host-secret\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dbBytes, err := os.ReadFile(realDB)
	if err != nil {
		t.Fatal(err)
	}
	dpkgOK := []string{"a 1:2.0-1 amd64", "b 3 all", "d 4-1 amd64", "d 4-1 arm64", "e 5 amd64", "f 6 amd64"}
	for _, tc := range []struct {
		name       string
		files      map[string]string // written
		links      map[string]string // image path -> symlink target
		dpkg, rpm  int               // packages each reader still returns
		incomplete string            // image path the one Incomplete line names
		why        string            // and a word of why
	}{
		{"garbage sqlite", map[string]string{"var/lib/rpm/rpmdb.sqlite": "SQLite format 3\x00" + strings.Repeat("\xde\xad", 4000)}, nil, 6, 0, "/var/lib/rpm/rpmdb.sqlite", "rpm sqlite"},
		{"garbage header in a sound sqlite", map[string]string{"var/lib/rpm/rpmdb.sqlite": garbageHeaderDB(t)}, nil, 6, 0, "/var/lib/rpm/rpmdb.sqlite", "header"},
		{"not sqlite at all", map[string]string{"var/lib/rpm/rpmdb.sqlite": "garbage"}, nil, 6, 0, "/var/lib/rpm/rpmdb.sqlite", ""},
		{"truncated sqlite", map[string]string{"var/lib/rpm/rpmdb.sqlite": string(dbBytes[:4096])}, nil, 6, 0, "/var/lib/rpm/rpmdb.sqlite", ""},
		{"garbage Packages", map[string]string{"var/lib/rpm/Packages": strings.Repeat("x", 8192)}, nil, 6, 0, "/var/lib/rpm/Packages", ""},
		{"rpm db symlinked out of the root", nil, map[string]string{"var/lib/rpm/rpmdb.sqlite": realDB}, 6, 0, "/var/lib/rpm/rpmdb.sqlite", "does not resolve inside the image"},
		{"status symlinked out of the root", map[string]string{"var/lib/rpm/rpmdb.sqlite": string(dbBytes)}, map[string]string{"var/lib/dpkg/status": hostStatus}, 0, 3, "/var/lib/dpkg/status", "does not resolve inside the image"},
		{"status climbing out with ..", nil, map[string]string{"var/lib/dpkg/status": strings.Repeat("../", 20) + strings.TrimPrefix(hostStatus, "/")}, 0, 0, "/var/lib/dpkg/status", "does not resolve inside the image"},
		{"status is a directory", map[string]string{"var/lib/dpkg/status/x": ""}, nil, 0, 0, "/var/lib/dpkg/status", "not a regular file"},
		{"os-release unreadable", map[string]string{"etc/os-release/x": ""}, nil, 6, 0, "/etc/os-release", "not a regular file"},
		{"status is a FIFO", nil, nil, 0, 0, "/var/lib/dpkg/status", "not a regular file but a FIFO"},
		{"dpkg journal is a FIFO", nil, nil, 6, 0, "/var/lib/dpkg/updates", "not a directory"},
		{"pacman's database is a FIFO", nil, nil, 6, 0, "/var/lib/pacman/local", "not a directory"},
		{"rpmdb.sqlite is a FIFO", nil, nil, 6, 0, "/var/lib/rpm/rpmdb.sqlite", "not a regular file but a FIFO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{dpkgStatus: statusOK}
			for k, v := range tc.files {
				files[k] = v
			}
			if _, ok := tc.links["var/lib/dpkg/status"]; ok || strings.HasPrefix(tc.incomplete, dpkgStatus) {
				delete(files, dpkgStatus)
			}
			root := writeTree(t, files)
			for name, target := range tc.links {
				os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755)
				if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
					t.Fatal(err)
				}
			}
			if strings.HasSuffix(tc.name, " a FIFO") {
				// Where the readers open directories too: none may block.
				for _, p := range []string{tc.incomplete, "lib/modules/x", "boot/x"} {
					p = filepath.Join(root, p)
					os.Remove(p)
					os.MkdirAll(filepath.Dir(p), 0o755)
					if err := unix.Mkfifo(p, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			inv := mustRead(t, root)
			if n := len(lines(inv, Dpkg)); n != tc.dpkg {
				t.Errorf("%d dpkg packages, want %d: %q", n, tc.dpkg, lines(inv, Dpkg))
			}
			if tc.dpkg == 6 && !slices.Equal(lines(inv, Dpkg), dpkgOK) {
				t.Errorf("dpkg packages %q", lines(inv, Dpkg))
			}
			if n := len(lines(inv, RPM)); n != tc.rpm {
				t.Errorf("%d rpm packages, want %d", n, tc.rpm)
			}
			for _, p := range inv.Packages {
				if p.Name == "host-secret" {
					t.Errorf("read the host's file through a symlink: %+v", p)
				}
			}
			if len(inv.Incomplete) != 1 || !strings.HasPrefix(inv.Incomplete[0], tc.incomplete+": ") || !strings.Contains(inv.Incomplete[0], tc.why) {
				t.Fatalf("Incomplete = %q, want one line naming %s (%q)", inv.Incomplete, tc.incomplete, tc.why)
			}
			if strings.Contains(inv.Incomplete[0], root) {
				t.Errorf("the line names a host path: %q", inv.Incomplete[0])
			}
			t.Logf("%s", inv.Incomplete[0])
			b, err := inv.SPDX("bad", nil)
			if err != nil {
				t.Fatal(err)
			}
			if c := readSPDX(t, b).DocumentComment; c != "incomplete: "+inv.Incomplete[0] {
				t.Errorf("document comment %q", c)
			}
		})
	}
}

func TestReadRootErrors(t *testing.T) {
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("no error for a missing root")
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := Read(f); err == nil || !strings.Contains(err.Error(), f) {
		t.Errorf("root is a file: %v", err)
	}
	inv := mustRead(t, t.TempDir())
	if len(inv.Packages)+len(inv.Incomplete)+len(inv.Kernels) != 0 || inv.OS != (OS{}) {
		t.Errorf("empty tree: %+v", inv)
	}
}

// BenchmarkReadSPDX is the builder's SBOM step on the cached Debian tree:
// Read then SPDX (bench/sbombench times it on the example image for make
// bench, against the 1 s).
func BenchmarkReadSPDX(b *testing.B) {
	root := fixture.DebianTree(b)
	src := repro.New(0, "bench")
	for b.Loop() {
		inv, err := Read(root)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := inv.SPDX("bench", src); err != nil {
			b.Fatal(err)
		}
	}
}

// garbageHeaderDB is an rpmdb.sqlite whose Packages table (rpm's schema,
// lib/backend/sqlite.c) holds one blob that is no rpm header.
func garbageHeaderDB(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rpmdb.sqlite")
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)",
		"INSERT INTO Packages (blob) VALUES (x'0000000300000010deadbeefdeadbeefdeadbeef')",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
