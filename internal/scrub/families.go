package scrub

import (
	"fmt"
	"strings"
)

// Family is a distribution family, named after its package database: what
// an operation concerns and what the docs state per family.
type Family string

// The families an operation can concern. An operation with no Families
// concerns every Linux image.
const (
	Debian Family = "debian" // dpkg/apt: Debian, Ubuntu, Raspberry Pi OS
	RedHat Family = "redhat" // rpm/dnf/yum: RHEL, Rocky, Alma, Fedora, Amazon Linux
	SUSE   Family = "suse"   // rpm/zypper: openSUSE, SLES
	Arch   Family = "arch"   // pacman: Arch Linux
	Alpine Family = "alpine" // apk: Alpine Linux
)

// Families lists every family, in the docs' order.
var Families = []Family{Debian, RedHat, SUSE, Arch, Alpine}

// familyInfo is what the docs say of a family beyond its operations.
var familyInfo = map[Family]struct{ title, distros, pm, services string }{
	Debian: {"Debian family", "Debian, Ubuntu, Raspberry Pi OS", "apt-get",
		"`/usr/sbin/policy-rc.d` (exit 101) for the build: `invoke-rc.d` and `deb-systemd-invoke`, which maintainer scripts call, start nothing; `/usr/sbin/service`, which runs `/etc/init.d` scripts itself in a chroot, is wrapped to start and stop nothing; `systemctl` runs offline (`SYSTEMD_OFFLINE=1`)."},
	RedHat: {"Red Hat family", "RHEL, Rocky, Alma, CentOS Stream, Fedora, Amazon Linux", "dnf, else yum",
		"systemctl runs offline in the chroot (`start` is refused, `enable` only makes links); `SYSTEMD_OFFLINE=1` is set for provisioners, and `/sbin/service` is wrapped for the build so it cannot run an `/etc/init.d` script directly."},
	SUSE: {"SUSE family", "openSUSE Leap and Tumbleweed, SLES", "zypper",
		"as the Red Hat family (systemd, `/sbin/service` wrapped)."},
	Arch: {"Arch family", "Arch Linux", "pacman",
		"systemd: `systemctl start` is refused in a chroot; `SYSTEMD_OFFLINE=1` is set for provisioners."},
	Alpine: {"Alpine family", "Alpine Linux (busybox `ash`, musl, OpenRC)", "apk",
		"OpenRC refuses to start a service while `/run/openrc/softlevel` is absent; the chroot's `/run` is a fresh tmpfs, and a `chroot_mounts` bringing a booted `/run` in is an error."},
}

// opFamilies are the families of the operations defined elsewhere that
// concern only some families; Operations fills Families from it when an
// operation sets none itself.
var opFamilies = map[string][]Family{
	"abrt-data":               {RedHat},
	"flag-reconfiguration":    {RedHat},
	"net-hostname":            {RedHat, SUSE},
	"net-nmconn":              {RedHat, SUSE, Debian, Arch},
	"rh-subscription-manager": {RedHat},
	"rhn-systemid":            {RedHat},
	"smolt-uuid":              {RedHat},
	"yum-uuid":                {RedHat},
}

func withFamilies(ops []Operation) []Operation {
	for i := range ops {
		if ops[i].Families == nil {
			ops[i].Families = opFamilies[ops[i].Name]
		}
	}
	return ops
}

// familyOps are the operations of this file: each family's package
// database, package manager and subscription state.
func familyOps() []Operation {
	return []Operation{
		{
			Name:     "package-manager-state",
			Families: []Family{RedHat, SUSE, Arch, Alpine},
			Description: "Remove package managers' locks and clone identities (removes files matching " +
				quoteGlobs(pmStateGlobs) + "); the package databases are kept.",
			Default: true,
			Run:     func(c *Context) error { return c.removeGlobs(false, pmStateGlobs...) },
		},
		{
			Name:     "pacman-keyring",
			Families: []Family{Arch},
			Description: "Remove pacman's keyring (`/etc/pacman.d/gnupg`), whose local master key is a secret every clone would share. " +
				"pacman then refuses signed packages until `pacman-key --init && pacman-key --populate` runs (Arch's `pacman-init.service` at first boot).",
			Run: func(c *Context) error { return c.removeGlobs(true, "/etc/pacman.d/gnupg") },
		},
		rpmDBOp(),
	}
}

// pmStateGlobs is per-machine state of the package managers, each file
// recreated by its tool when absent:
//   - /var/lib/zypp/AnonymousUniqueId: libzypp sends it to repository
//     servers as X-ZYpp-AnonymousId (zypp/media/MediaCurl.cc) and makes a
//     new one when it is missing (tests/zypp/Target_test.cc); SUSE's own
//     kiwi image descriptions remove it (bsc#1098535).
//   - dnf's process locks hold a PID of the build machine (dnf/lock.py:
//     rpmdb_lock.pid in persistdir /var/lib/dnf, metadata_lock.pid and
//     download_lock.pid in the cache, log_lock.pid in the log directory);
//     tmpfiles.d(5)'s dnf example removes them at boot for the same reason.
//   - /var/run/yum.pid: yum's lock (yum/__init__.py, doLock).
//   - /var/lib/pacman/db.lck: pacman refuses to run while it exists
//     (pacman(8), "unable to lock database").
//   - /lib/apk/db/lock: apk's database lock (apk-tools src/database.c).
//   - dnf's countme cookie holds the week of the first count (libdnf
//     libdnf/repo/Repo.cpp: getPersistdir() + "/countme", persistdir
//     /var/lib/dnf + "repos/" + ID-HASH), rpm-ostree's the same
//     (rust/src/countme/cookie.rs, /var/lib/rpm-ostree-countme): a clone
//     would report the template's age.
var pmStateGlobs = []string{
	"/var/lib/zypp/AnonymousUniqueId",
	"/var/lib/dnf/rpmdb_lock.pid", "/var/cache/dnf/*_lock.pid", "/var/log/log_lock.pid",
	"/var/lib/dnf/repos/*/countme", "/var/lib/rpm-ostree-countme/countme",
	"/var/run/yum.pid",
	"/var/lib/pacman/db.lck",
	"/lib/apk/db/lock",
}

// rpmDBDirs are where rpm keeps its database: /var/lib/rpm, and
// /usr/lib/sysimage/rpm since Fedora 36 and openSUSE Tumbleweed (where
// /var/lib/rpm is a symlink to it, so it is not listed twice in a report:
// removing through the symlink would name the link's path).
var rpmDBDirs = []string{"/var/lib/rpm", "/usr/lib/sysimage/rpm"}

// rpmDBOp removes what rpm recreates by itself and nothing it needs
// (`rpm -qa` lists the same packages afterwards):
//   - __db.*: Berkeley DB environment files of rpm < 4.16 (libguestfs's
//     sysprep_operation_rpm_db.ml: "RPM will recreate these files
//     automatically"), and .dbenv.lock, their lock (rpm lib/backend/db3.c);
//   - .rpm.lock: the transaction lock, created on every write (rpm
//     lib/rpmlock.c, rpmlockNew opens it with O_CREAT);
//   - rpmdb.sqlite-shm of rpm >= 4.16's sqlite backend: the WAL index,
//     which holds no persistent content and is rebuilt from the WAL
//     (sqlite.org/wal.html, "the wal-index ... is transient");
//   - rpmdb.sqlite-wal only when empty: rpm keeps the WAL file
//     (SQLITE_FCNTL_PERSIST_WAL in lib/backend/sqlite.c) and a clean close
//     checkpoints it to zero bytes; a non-empty WAL holds committed
//     transactions not yet in rpmdb.sqlite, and is kept.
func rpmDBOp() Operation {
	var globs []string
	for _, d := range rpmDBDirs {
		globs = append(globs, d+"/__db.*", d+"/.dbenv.lock", d+"/.rpm.lock", d+"/rpmdb.sqlite-shm")
	}
	return Operation{
		Name:     "rpm-db",
		Families: []Family{RedHat, SUSE},
		Description: "Remove host-specific RPM database files and locks, which rpm recreates (removes files matching " +
			quoteGlobs(globs) + ", and `rpmdb.sqlite-wal` when it is empty); the package database itself is kept.",
		Default: true,
		Run: func(c *Context) error {
			for _, d := range rpmDBDirs {
				// Once only when one directory is a symlink to the other.
				if fi, err := c.Root.Lstat(d); err != nil || !fi.IsDir() {
					continue
				}
				if err := c.removeGlobs(false, d+"/__db.*", d+"/.dbenv.lock", d+"/.rpm.lock", d+"/rpmdb.sqlite-shm"); err != nil {
					return err
				}
				wal := d + "/rpmdb.sqlite-wal"
				if fi, err := c.Root.Lstat(wal); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
					if err := c.removeOne(wal); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
}

func quoteGlobs(globs []string) string {
	q := make([]string, len(globs))
	for i, g := range globs {
		q[i] = "`" + g + "`"
	}
	return strings.Join(q, ", ")
}

// familiesCell is the operations table's Families column.
func familiesCell(fs []Family) string {
	if len(fs) == 0 {
		return "all"
	}
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, ", ")
}

// concerns reports whether op concerns family f specifically.
func concerns(op Operation, f Family) bool {
	for _, g := range op.Families {
		if g == f {
			return true
		}
	}
	return false
}

// FamiliesDocs is the docs' per-family section, generated from the
// operations and familyInfo: for each family its distributions, the
// package manager install-packages uses, how service starts are kept
// from the build host, and the operations that concern it beyond those
// every image gets.
func FamiliesDocs() string {
	var b strings.Builder
	ops := Operations()
	for _, f := range Families {
		info := familyInfo[f]
		fmt.Fprintf(&b, "### %s (`%s`)\n\n%s.\n\n", info.title, f, info.distros)
		fmt.Fprintf(&b, "- Elements' `install-packages`: %s.\n", info.pm)
		fmt.Fprintf(&b, "- Service starts during the build: %s\n", info.services)
		var names []string
		for _, op := range ops {
			if concerns(op, f) {
				def := ""
				if !op.Default {
					def = " (not default)"
				}
				names = append(names, "`"+op.Name+"`"+def)
			}
		}
		fmt.Fprintf(&b, "- Operations for this family beyond those for all: %s.\n\n", strings.Join(names, ", "))
	}
	return strings.TrimSuffix(b.String(), "\n")
}
