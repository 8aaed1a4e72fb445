package scrub

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// Operations that edit or create files rather than only remove them.

// backupFileGlobs and backupFileRoots are virt-sysprep's backup-files: on
// Linux only these trees are searched.
var (
	backupFileGlobs = []string{"*.bak", "*~"}
	backupFileRoots = []string{"/etc", "/root", "/srv", "/tmp", "/var"}
)

func backupFilesOp() Operation {
	return Operation{
		Name: "backup-files",
		Description: "Remove editor backup files (`*.bak`, `*~`) found anywhere under `/etc`, `/root`, `/srv`, `/tmp` and `/var` " +
			"(regular files only; other filesystems mounted below those are not entered).",
		Default: true,
		Run: func(c *Context) error {
			var errs []error
			for _, r := range backupFileRoots {
				errs = append(errs, c.walkFiles(r, func(p string, fi fs.FileInfo) error {
					if !fi.Mode().IsRegular() {
						return nil
					}
					for _, g := range backupFileGlobs {
						if ok, _ := path.Match(g, path.Base(p)); ok {
							return c.removeOne(p)
						}
					}
					return nil
				}))
			}
			return errors.Join(errs...)
		},
	}
}

// walkFiles calls fn for every non-directory beneath dir, never following a
// symlink and never entering a directory on another filesystem than its
// parent. dir itself is not followed if it is a symlink.
func (c *Context) walkFiles(dir string, fn func(string, fs.FileInfo) error) error {
	top, err := c.Root.Lstat(dir)
	if err != nil || !top.IsDir() {
		if err != nil && !skippable(err) {
			return err
		}
		return nil
	}
	topDev, _ := devOf(top)
	names, err := c.readDir(dir, false)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if c.ctx != nil && c.ctx.Err() != nil {
			return c.ctx.Err()
		}
		p := path.Join(dir, n)
		fi, err := c.Root.Lstat(p)
		if err != nil {
			if !skippable(err) {
				errs = append(errs, err)
			}
			continue
		}
		if fi.IsDir() {
			if d, ok := devOf(fi); ok && d != topDev {
				continue
			}
			errs = append(errs, c.walkFiles(p, fn))
			continue
		}
		errs = append(errs, fn(p, fi))
	}
	return errors.Join(errs...)
}

func cloudInitOp() Operation {
	return Operation{
		Name: "cloud-init",
		Description: "Reset cloud-init, as `cloud-init clean --logs` does: remove everything in `/var/lib/cloud` " +
			"except `seed` (local datasource) and `scripts` (per-boot/per-instance scripts the image ships), and `/var/log/cloud-init*`.",
		Default: true,
		Run: func(c *Context) error {
			names, err := c.readDir("/var/lib/cloud", false)
			if err != nil {
				return err
			}
			var errs []error
			for _, n := range names {
				if n == "seed" || n == "scripts" {
					continue
				}
				errs = append(errs, c.removeTree("/var/lib/cloud/"+n))
			}
			errs = append(errs, c.removeGlobs(false, "/var/log/cloud-init*"))
			return errors.Join(errs...)
		},
	}
}

// machineIDUninitialized makes systemd treat the next boot as the first
// (ConditionFirstBoot=yes, presets applied) and generate a new ID; an empty
// file would only make it generate the ID.
const machineIDUninitialized = "uninitialized\n"

// Markers of ostree. A physical sysroot holds the repository and the
// deployments (ostree's docs, "Deployments": /ostree/repo,
// /ostree/deploy/OS/deploy/CHECKSUM.SERIAL); a deployment, booted or as a
// bootc container image, carries ostree's boot data and prepare-root
// configuration under /usr/lib, and bootc's under /usr/lib/bootc.
var (
	ostreeSysrootMarkers    = []string{"/ostree/repo", "/ostree/deploy"}
	ostreeDeploymentMarkers = []string{"/usr/lib/ostree-boot", "/usr/lib/ostree/prepare-root.conf", "/usr/lib/bootc"}
)

// ostreeDeployments lists the /etc/machine-id paths of an ostree image, or
// nil when the image is not one: the root's own for a deployment (or a
// bootc image), each deployment's for a physical sysroot.
func ostreeDeployments(c *Context) ([]string, error) {
	sysroot := true
	for _, m := range ostreeSysrootMarkers {
		if !c.isDir(m) {
			sysroot = false
		}
	}
	if sysroot {
		dirs, err := c.glob("/ostree/deploy/*/deploy/*/etc")
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(dirs))
		for _, d := range dirs {
			ids = append(ids, path.Join(d, "machine-id"))
		}
		return ids, nil
	}
	if ok, err := anyExists(c, ostreeDeploymentMarkers); err != nil || !ok {
		return nil, err
	}
	return []string{"/etc/machine-id"}, nil
}

// resetMachineID writes content to the machine-id file p where it exists
// (absent stays absent: the image never had one, or an ostree image
// without machineid-compat).
func (c *Context) resetMachineID(p, content string) error {
	fi, err := c.Root.Lstat(p)
	if err != nil {
		if skippable(err) {
			return nil
		}
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s in the image is a directory; not touching it", p)
	}
	perm := fs.FileMode(0o444)
	if fi.Mode().IsRegular() {
		perm = permOf(fi)
	}
	if data, _, ok, _ := c.regularFile(p); ok && string(data) == content {
		return nil
	}
	return c.writeFile(p, []byte(content), perm)
}

func machineIDOp() Operation {
	return Operation{
		Name: "machine-id",
		Description: "Write `uninitialized` to `/etc/machine-id` (systemd then generates a new ID and runs first-boot " +
			"units) and remove `/var/lib/dbus/machine-id` unless it is a symlink to `/etc/machine-id`. An image without " +
			"`/etc/machine-id` (Alpine, OpenRC) gets none; on an OpenRC image without systemd an existing one is emptied " +
			"(Alpine's `machine-id` service makes a new ID only for an empty or missing file). On ostree/bootc images (`/ostree/repo` and `/ostree/deploy`: " +
			"each deployment's `etc/machine-id`; or `/usr/lib/ostree-boot`, `/usr/lib/ostree/prepare-root.conf`, " +
			"`/usr/lib/bootc`) the file is emptied instead: ostree cannot handle `uninitialized` (osbuild's " +
			"`org.osbuild.machine-id` stage, `first-boot: no`).",
		Default: true,
		Run: func(c *Context) error {
			var errs []error
			ids, err := ostreeDeployments(c)
			if err != nil {
				return err
			}
			init, err := initSystem(c)
			if err != nil {
				return err
			}
			switch {
			case ids != nil:
				for _, p := range ids {
					errs = append(errs, c.resetMachineID(p, ""))
				}
			case init == "openrc":
				// Alpine's machine-id service makes a new ID only when the
				// file is empty or missing ([ -s ], aports
				// main/openrc/machine-id.initd): uninitialized would stay.
				errs = append(errs, c.resetMachineID("/etc/machine-id", ""))
			default:
				errs = append(errs, c.resetMachineID("/etc/machine-id", machineIDUninitialized))
			}
			const dbus = "/var/lib/dbus/machine-id"
			if fi, err := c.Root.Lstat(dbus); err == nil {
				if fi.Mode()&fs.ModeSymlink != 0 {
					// Debian ships it as a link to /etc/machine-id: keep that.
					if target, err := c.Root.Readlink(dbus); err == nil &&
						(path.Clean(target) == "/etc/machine-id" || path.Join(path.Dir(dbus), target) == "/etc/machine-id") {
						return errors.Join(errs...)
					}
				}
				errs = append(errs, c.removeTree(dbus))
			}
			return errors.Join(errs...)
		},
	}
}

const ifcfgGlob = "/etc/sysconfig/network-scripts/ifcfg-*"

func netHostnameOp() Operation {
	return Operation{
		Name:        "net-hostname",
		Description: "Remove `HOSTNAME=` and `DHCP_HOSTNAME=` lines from `" + ifcfgGlob + "` files.",
		Default:     true,
		Run: func(c *Context) error {
			return c.editGlobs(func(_, s string) (string, bool, error) {
				out, changed := dropLines(s, func(l string) bool {
					k, _, ok := keyValue(l)
					return ok && (k == "HOSTNAME" || k == "DHCP_HOSTNAME")
				})
				return out, changed, nil
			}, ifcfgGlob)
		},
	}
}

func pacctOp() Operation {
	return Operation{
		Name: "pacct-log",
		Description: "Remove the process accounting logs (`/var/account/pacct*`, `/var/log/account/pacct*`) " +
			"and leave an empty `pacct` in their directory.",
		Default: true,
		Run: func(c *Context) error {
			var errs []error
			for _, dir := range []string{"/var/account", "/var/log/account"} {
				matches, err := c.glob(dir + "/pacct*")
				if err != nil {
					errs = append(errs, err)
					continue
				}
				perm := fs.FileMode(0o600)
				if fi, err := c.Root.Lstat(dir + "/pacct"); err == nil && fi.Mode().IsRegular() {
					if fi.Size() == 0 && len(matches) == 1 {
						continue // already clean
					}
					perm = permOf(fi)
				}
				if len(matches) == 0 {
					continue
				}
				errs = append(errs, c.removeGlobs(false, dir+"/pacct*"))
				if fi, err := c.Root.Lstat(dir); err == nil && fi.IsDir() {
					errs = append(errs, c.writeFile(dir+"/pacct", nil, perm))
				}
			}
			return errors.Join(errs...)
		},
	}
}

// lockHash is the new password field of a shadow entry. A usable hash, or
// an empty field (no password at all), becomes "*": the hash is gone from
// the image (it could be cracked offline) and the account cannot log in
// with a password. "*" rather than "!": OpenSSH built without PAM treats a
// "!"-prefixed account as locked and refuses even key logins, while "*"
// only disables the password. A field already starting with "!" (a locked
// account that still carries its hash) keeps its "!" but loses the hash.
func lockHash(field string) (string, bool) {
	switch {
	case field == "":
		return "*", true
	case strings.HasPrefix(field, "*"):
		return field, false
	case strings.HasPrefix(field, "!"):
		rest := strings.TrimLeft(field, "!")
		if rest == "" || strings.HasPrefix(rest, "*") {
			return field, false
		}
		return "!", true
	default:
		return "*", true
	}
}

func passwordsOp() Operation {
	return Operation{
		Name: "passwords",
		Description: "Lock every password in `/etc/shadow`: a usable hash or an empty password becomes `*` (no hash left " +
			"in the image; key logins still work), `!<hash>` becomes `!`. The file keeps its mode and owner.",
		Default: true,
		Run: func(c *Context) error {
			data, perm, ok, err := c.regularFile("/etc/shadow")
			if err != nil || !ok {
				return err
			}
			lines := strings.SplitAfter(string(data), "\n")
			changed := false
			for i, l := range lines {
				body := strings.TrimSuffix(l, "\n")
				f := strings.Split(body, ":")
				if len(f) < 2 || strings.HasPrefix(body, "#") || strings.TrimSpace(body) == "" {
					continue
				}
				if nf, ch := lockHash(f[1]); ch {
					f[1] = nf
					lines[i] = strings.Join(f, ":") + l[len(body):]
					changed = true
				}
			}
			if !changed {
				return nil
			}
			return c.writeFile("/etc/shadow", []byte(strings.Join(lines, "")), perm)
		},
	}
}

func tmpFilesOp() Operation {
	return Operation{
		Name:        "tmp-files",
		Description: "Remove everything in `/tmp` and `/var/tmp` (the directories themselves stay).",
		Default:     true,
		Run: func(c *Context) error {
			return errors.Join(c.emptyDir("/tmp"), c.emptyDir("/var/tmp"))
		},
	}
}

// userAccountOp removes the accounts people log in with (UID_MIN and up,
// except nobody), as virt-sysprep's user-account does.
func userAccountOp() Operation {
	return Operation{
		Name: "user-account",
		Description: "Remove the user accounts (UID from `UID_MIN` of `/etc/login.defs`, default 1000, except `nobody`): " +
			"their lines in passwd/shadow/group/gshadow, their group memberships, home directories under `/home` and mail spools.",
		Run: func(c *Context) error {
			minUID := 1000
			if defs, _, ok, _ := c.regularFile("/etc/login.defs"); ok {
				for _, l := range strings.Split(string(defs), "\n") {
					if f := strings.Fields(l); len(f) == 2 && f[0] == "UID_MIN" {
						if n, err := strconv.Atoi(f[1]); err == nil {
							minUID = n
						}
					}
				}
			}
			passwd, _, ok, err := c.regularFile("/etc/passwd")
			if err != nil || !ok {
				return err
			}
			victims := map[string]bool{}
			var homes []string
			for _, l := range strings.Split(string(passwd), "\n") {
				f := strings.Split(l, ":")
				if len(f) < 7 {
					continue
				}
				uid, err := strconv.Atoi(f[2])
				if err != nil || uid < minUID || uid == 65534 || f[0] == "nobody" {
					continue
				}
				victims[f[0]] = true
				if h := path.Clean(f[5]); strings.HasPrefix(h, "/home/") {
					homes = append(homes, h)
				}
			}
			if len(victims) == 0 {
				return nil
			}
			var errs []error
			// name field 0; member lists in the given fields.
			edit := func(file string, members ...int) {
				data, perm, ok, err := c.regularFile(file)
				if err != nil || !ok {
					errs = append(errs, err)
					return
				}
				var out []string
				for _, l := range strings.SplitAfter(string(data), "\n") {
					body := strings.TrimSuffix(l, "\n")
					f := strings.Split(body, ":")
					if body == "" || len(f) < 2 {
						out = append(out, l)
						continue
					}
					if victims[f[0]] && len(members) == 0 {
						continue // the user's passwd or shadow line
					}
					for _, m := range members {
						if m < len(f) && f[m] != "" {
							var keep []string
							for _, u := range strings.Split(f[m], ",") {
								if !victims[u] {
									keep = append(keep, u)
								}
							}
							f[m] = strings.Join(keep, ",")
						}
					}
					// The user's private group goes with the user once it
					// has no other members.
					if victims[f[0]] && len(members) > 0 && (members[0] >= len(f) || f[members[0]] == "") {
						continue
					}
					out = append(out, strings.Join(f, ":")+l[len(body):])
				}
				if n := strings.Join(out, ""); n != string(data) {
					errs = append(errs, c.writeFile(file, []byte(n), perm))
				}
			}
			edit("/etc/passwd")
			edit("/etc/shadow")
			edit("/etc/group", 3)
			edit("/etc/gshadow", 3, 2)
			for _, h := range homes {
				errs = append(errs, c.removeTree(h))
			}
			for u := range victims {
				errs = append(errs, c.removeTree("/var/spool/mail/"+u), c.removeTree("/var/mail/"+u))
			}
			return errors.Join(errs...)
		},
	}
}
