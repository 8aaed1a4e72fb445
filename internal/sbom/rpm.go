package sbom

import (
	"database/sql"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"

	_ "github.com/glebarez/go-sqlite" // the database/sql driver "sqlite" go-rpmdb opens rpmdb.sqlite with
	rpmdb "github.com/knqyf263/go-rpmdb/pkg"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// Where rpm keeps its database (rpm's %_dbpath): /usr/lib/sysimage/rpm on
// Fedora 36+ and openSUSE (which leave /var/lib/rpm as a symlink to it),
// /var/lib/rpm on RHEL and its rebuilds. The first directory holding a
// database is read.
var rpmDBDirs = []string{"/usr/lib/sysimage/rpm", "/var/lib/rpm"}

// rpmDBFiles are the database of each backend rpm has had, in the order
// rpm 4.16+ prefers them: sqlite (the default since 4.16), ndb (SUSE's),
// Berkeley DB (before 4.16). rpm(8) --rebuilddb, rpmdb(8).
var rpmDBFiles = []string{"rpmdb.sqlite", "Packages.db", "Packages"}

// rpmDBMaxSize bounds the copy of a database taken out of the image (a
// hostile image must not fill the host's disk): the largest distribution
// database is tens of MiB.
const rpmDBMaxSize = 1 << 30

// readRPM reads the rpm database through go-rpmdb (pure Go; sqlite through
// glebarez/go-sqlite). The library opens files by host path, so the
// database (and sqlite's write-ahead log, which may hold committed
// transactions) is copied out of the image through inroot first: it is
// never opened through a path the image's symlinks could redirect, and
// sqlite's own files land in the copy's directory, not in the image.
//
// Version is rpm's %{EVR}: "epoch:version-release" when the package has
// an Epoch tag, "version-release" otherwise (as rpm -q --qf '%{EVR}'
// prints it; %{EPOCHNUM} would print "0:" for every package without one).
func readRPM(r *inroot.Root) ([]Package, []string) {
	db := ""
	for _, dir := range rpmDBDirs {
		for _, f := range rpmDBFiles {
			if ok, _ := r.Exists(dir + "/" + f); ok {
				db = dir + "/" + f
				break
			}
		}
		if db != "" {
			break
		}
	}
	if db == "" {
		return nil, nil
	}
	pkgs, err := readRPMDB(r, db)
	if err != nil {
		return nil, []string{fmt.Sprintf("%s: %v", db, err)}
	}
	return pkgs, nil
}

func readRPMDB(r *inroot.Root, db string) ([]Package, error) {
	fi, err := r.Stat(db)
	if err != nil {
		return nil, fmt.Errorf("%v%s", unwrapPath(err), linkNote(r, db))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file but %s", kind(fi.Mode()))
	}
	if fi.Size() > rpmDBMaxSize {
		return nil, fmt.Errorf("%d bytes, more than the %d this reader copies out", fi.Size(), rpmDBMaxSize)
	}
	tmp, err := os.MkdirTemp("", "imagefactory-rpmdb-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, path.Base(db))
	if err := r.CopyOut(db, dst); err != nil {
		return nil, unwrapPath(err)
	}
	if path.Base(db) == "rpmdb.sqlite" {
		if ok, _ := r.Exists(db + "-wal"); ok {
			if err := r.CopyOut(db+"-wal", dst+"-wal"); err != nil {
				return nil, fmt.Errorf("its write-ahead log: %v", unwrapPath(err))
			}
		}
		// go-rpmdb's sqlite reader leaves a goroutine blocked when its
		// query fails: ask sqlite first whether the table is there.
		if err := sqliteCheck(dst); err != nil {
			return nil, err
		}
	}
	if IsolateRPM {
		return listRPMChild(dst)
	}
	return listRPMDB(dst)
}

// listRPMDB lists the packages of a database file on the host (a copy).
func listRPMDB(file string) ([]Package, error) {
	h, err := rpmdb.Open(file)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	// A header that does not parse fails the whole list. go-rpmdb's
	// reading goroutine then stays blocked on its next row until the
	// process ends (one goroutine and the deleted copy's fd, per corrupt
	// database: one more reason for IsolateRPM).
	list, err := h.ListPackages()
	if err != nil {
		return nil, err
	}
	pkgs := make([]Package, 0, len(list))
	for _, p := range list {
		v := p.Version + "-" + p.Release
		if p.Epoch != nil {
			v = strconv.Itoa(*p.Epoch) + ":" + v
		}
		pkgs = append(pkgs, Package{Name: p.Name, Version: v, Arch: p.Arch, Source: p.SourceRpm, License: p.License, Manager: RPM, Supplier: p.Vendor})
	}
	return pkgs, nil
}

// sqliteCheck opens a copied rpmdb.sqlite and counts the rows of
// rpm's Packages table (rpm's lib/backend/sqlite.c schema).
func sqliteCheck(file string) error {
	db, err := sql.Open("sqlite", file)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM Packages").Scan(&n); err != nil {
		return fmt.Errorf("not a readable rpm sqlite database: %v", err)
	}
	return nil
}
