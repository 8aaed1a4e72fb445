package scrub

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// The test image: a busybox tree plus, for every operation, the files it
// should remove and near misses it should leave. Every operation runs on
// the same full tree, so "removes X and nothing else" is checked against
// the files of all the other operations too.
const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" +
		"git:x:998:998:git:/var/lib/git:/bin/sh\nu:x:1000:1000:User:/home/u:/bin/sh\n"
	testGroup  = "root:x:0:\nshadow:x:42:\nnogroup:x:65534:\nwheel:x:10:root,u\nu:x:1000:\n"
	testShadow = "root:" + fixture.RootPasswordHash + ":19700:0:99999:7:::\n" +
		"nobody:*:19700:0:99999:7:::\nu::19700:0:99999:7:::\nv:!$6$salt$hash:19700::::::\n"
	testIfcfg = "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nHOSTNAME=build\nDHCP_HOSTNAME=build\nONBOOT=yes\n"
)

var testFiles = map[string]string{
	"/etc/passwd": testPasswd, "/etc/group": testGroup, "/etc/shadow": testShadow,
	"/home/u/.profile": "# profile\n",

	"/var/spool/abrt/ccpp-1/coredump": "core",
	"/etc/foo.bak":                    "b", "/etc/sub/x~": "b", "/var/lib/y.bak": "b", "/usr/share/z.bak": "kept: not searched",
	"/etc/dir.bak/inside": "kept: in a directory named *.bak",
	"/root/.bash_history": "h", "/home/u/.bash_history": "h",
	"/etc/blkid/blkid.tab":                                      "t",
	"/usr/local/share/ca-certificates/my.crt":                   "c",
	"/var/lib/cloud/instances/i-1/obj.pkl":                      "p",
	"/var/lib/cloud/data/status.json":                           "{}",
	"/var/lib/cloud/seed/nocloud/user-data":                     "#cloud-config\n",
	"/var/lib/cloud/scripts/per-boot/x.sh":                      "#!/bin/sh\n",
	"/var/log/cloud-init.log":                                   "l",
	"/var/log/cloud-init-output.log":                            "l",
	"/var/crash/1/vmcore":                                       "v",
	"/var/lib/systemd/credential.secret":                        "s",
	"/var/spool/cron/crontabs/root":                             "* * * * * true\n",
	"/var/lib/dhcp/dhclient.eth0.leases":                        "lease",
	"/var/lib/dhcpd/dhcpd.leases":                               "lease",
	"/var/lib/dovecot/instances":                                "i",
	"/etc/sysconfig/iptables":                                   "*filter\n",
	"/etc/ipa/default.conf":                                     "[global]\n",
	"/etc/krb5.keytab":                                          "k",
	"/var/log/syslog":                                           "l",
	"/var/log/auth.log":                                         "l",
	"/var/log/apt/history.log":                                  "l",
	"/var/log/journal/abc/system.journal":                       "j",
	"/var/log/custom/app.txt":                                   "kept: not a listed log",
	"/etc/lvm/devices/system.devices":                           "d",
	"/etc/machine-id":                                           "0123456789abcdef0123456789abcdef\n",
	"/var/lib/dbus/machine-id":                                  "0123456789abcdef0123456789abcdef\n",
	"/var/mail/root":                                            "mail",
	"/etc/sysconfig/network-scripts/ifcfg-eth0":                 testIfcfg,
	"/etc/NetworkManager/system-connections/Wired.nmconnection": "[connection]\nid=Wired\n[ethernet]\nmac-address=52:54:00:12:34:56\n",
	"/var/lib/systemd/network/dhcp-server-lease/eth1":           "{}",
	"/var/log/account/pacct":                                    "acct",
	"/var/log/account/pacct.0":                                  "acct",
	"/var/cache/apt/archives/foo.deb":                           "deb",
	"/var/cache/apt/archives/lock":                              "",
	"/var/run/faillock/root":                                    "f",
	"/etc/shadow-":                                              "old",
	"/var/log/puppet/puppet.log":                                "l",
	"/var/lib/systemd/random-seed":                              "r",
	"/opt/junk/a":                                               "j",
	"/etc/pki/consumer/cert.pem":                                "c",
	"/etc/sysconfig/rhn/systemid":                               "s",
	"/var/lib/rpm/__db.001":                                     "d",
	"/var/lib/rpm/Packages":                                     "kept",
	"/var/lib/rpm/rpmdb.sqlite-wal":                             "kept: a non-empty WAL holds transactions",
	"/var/lib/zypp/AnonymousUniqueId":                           "u",
	"/var/lib/pacman/db.lck":                                    "",
	"/etc/pacman.d/gnupg/pubring.gpg":                           "k",
	"/var/cache/apk/APKINDEX.66df4a8c.tar.gz":                   "i",
	"/lib/apk/db/lock":                                          "",
	"/lib/apk/db/installed":                                     "kept: apk's package database",
	"/var/lib/pacman/local/ALPM_DB_VERSION":                     "kept: pacman's package database",
	"/var/log/samba/log.smbd":                                   "l",
	"/etc/smolt/uuid":                                           "u",
	"/etc/ssh/ssh_host_ed25519_key":                             "k",
	"/etc/ssh/ssh_host_ed25519_key.pub":                         "k",
	"/etc/ssh/sshd_config":                                      "kept",
	"/root/.ssh/authorized_keys":                                "ssh-ed25519 AAAA",
	"/home/u/.ssh/id_rsa":                                       "k",
	"/var/lib/git/.ssh/authorized_keys":                         "k",
	"/var/log/sssd/sssd.log":                                    "l",
	"/tmp/a":                                                    "t",
	"/tmp/.X11-unix/X0":                                         "",
	"/var/tmp/b":                                                "t",
	"/etc/udev/rules.d/70-persistent-net.rules":                 "r",
	"/var/run/utmp":                                             "u",
	"/var/lib/yum/uuid":                                         "u",
	"/root/.zsh_history":                                        "h",
	"/home/u/.zsh_history":                                      "h",
}

var testLinks = map[string]string{
	"/var/lib/cloud/instance": "/var/lib/cloud/instances/i-1",
}

// newImage builds the test tree and opens it as an inroot.Root.
func newImage(t *testing.T, files, links map[string]string) (string, *inroot.Root) {
	t.Helper()
	return newImageIn(t, t.TempDir(), files, links)
}

// newImageIn is newImage in the empty directory dir.
func newImageIn(t *testing.T, dir string, files, links map[string]string) (string, *inroot.Root) {
	t.Helper()
	fixture.BusyboxTree(t, dir)
	for p, content := range files {
		hp := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if p == "/etc/shadow" {
			mode = 0o640
		}
		if err := os.WriteFile(hp, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(hp, mode); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		hp := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(hp)
		if err := os.Symlink(target, hp); err != nil {
			t.Fatal(err)
		}
	}
	r, err := inroot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return dir, r
}

// snapshot describes every entry beneath dir: type, permissions, and the
// content of files or target of symlinks.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(p, dir+"/")
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(data)
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diff(before, after map[string]string) (removed, changed, created []string) {
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			removed = append(removed, p)
		case a != b:
			changed = append(changed, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			created = append(created, p)
		}
	}
	sort.Strings(removed)
	sort.Strings(changed)
	sort.Strings(created)
	return
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	if len(s) == 0 {
		return nil
	}
	return s
}

func opsNamed(t *testing.T, names ...string) []Operation {
	t.Helper()
	ops, err := Select(names)
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

func TestOperationsChangeExactlyTheirFiles(t *testing.T) {
	home := []string{"/home/u", "/home/u/.bash_history", "/home/u/.profile", "/home/u/.ssh", "/home/u/.ssh/id_rsa", "/home/u/.zsh_history"}
	tests := []struct {
		op               string
		opts             Options
		removed, changed []string
		created          []string
		content          map[string]string
	}{
		{op: "abrt-data", removed: []string{"/var/spool/abrt/ccpp-1", "/var/spool/abrt/ccpp-1/coredump"}},
		{op: "backup-files", removed: []string{"/etc/foo.bak", "/etc/sub/x~", "/var/lib/y.bak"}},
		{op: "bash-history", removed: []string{"/root/.bash_history", "/home/u/.bash_history"}},
		{op: "blkid-tab", removed: []string{"/etc/blkid/blkid.tab"}},
		{op: "ca-certificates", removed: []string{"/usr/local/share/ca-certificates/my.crt"}},
		{op: "cloud-init", removed: []string{"/var/lib/cloud/data", "/var/lib/cloud/data/status.json", "/var/lib/cloud/instance",
			"/var/lib/cloud/instances", "/var/lib/cloud/instances/i-1", "/var/lib/cloud/instances/i-1/obj.pkl",
			"/var/log/cloud-init-output.log", "/var/log/cloud-init.log"}},
		{op: "crash-data", removed: []string{"/var/crash/1", "/var/crash/1/vmcore"}},
		{op: "credential-secret", removed: []string{"/var/lib/systemd/credential.secret"}},
		{op: "cron-spool", removed: []string{"/var/spool/cron/crontabs", "/var/spool/cron/crontabs/root"}},
		{op: "dhcp-client-state", removed: []string{"/var/lib/dhcp/dhclient.eth0.leases"}},
		{op: "dhcp-server-state", removed: []string{"/var/lib/dhcpd/dhcpd.leases"}},
		{op: "dovecot-data", removed: []string{"/var/lib/dovecot/instances"}},
		{op: "firewall-rules", removed: []string{"/etc/sysconfig/iptables"}},
		{op: "firstboot"}, // ssh-hostkeys not selected: nothing to do
		{op: "flag-reconfiguration", created: []string{"/.unconfigured"}},
		{op: "hostname", changed: []string{"/etc/hostname"}, content: map[string]string{"/etc/hostname": "localhost\n"}},
		{op: "hostname", opts: Options{Hostname: "web1"}, changed: []string{"/etc/hostname"}, content: map[string]string{"/etc/hostname": "web1\n"}},
		{op: "ipa-client", removed: []string{"/etc/ipa/default.conf"}},
		{op: "kerberos-hostkeytab", removed: []string{"/etc/krb5.keytab"}},
		{op: "logfiles", removed: []string{"/var/log/apt/history.log", "/var/log/auth.log", "/var/log/cloud-init-output.log",
			"/var/log/cloud-init.log", "/var/log/journal/abc", "/var/log/journal/abc/system.journal", "/var/log/syslog"}},
		{op: "lvm-system-devices", removed: []string{"/etc/lvm/devices/system.devices"}},
		{op: "machine-id", removed: []string{"/var/lib/dbus/machine-id"}, changed: []string{"/etc/machine-id"},
			content: map[string]string{"/etc/machine-id": "uninitialized\n"}},
		{op: "mail-spool", removed: []string{"/var/mail/root"}},
		{op: "net-hostname", changed: []string{"/etc/sysconfig/network-scripts/ifcfg-eth0"},
			content: map[string]string{"/etc/sysconfig/network-scripts/ifcfg-eth0": "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nONBOOT=yes\n"}},
		{op: "net-hwaddr", changed: []string{"/etc/sysconfig/network-scripts/ifcfg-eth0"},
			content: map[string]string{"/etc/sysconfig/network-scripts/ifcfg-eth0": "DEVICE=eth0\nHOSTNAME=build\nDHCP_HOSTNAME=build\nONBOOT=yes\n"}},
		{op: "net-nmconn", changed: []string{"/etc/NetworkManager/system-connections/Wired.nmconnection"},
			content: map[string]string{"/etc/NetworkManager/system-connections/Wired.nmconnection": "[connection]\nid=Wired\n[ethernet]\n"}},
		{op: "networkd-state", removed: []string{"/var/lib/systemd/network/dhcp-server-lease", "/var/lib/systemd/network/dhcp-server-lease/eth1"}},
		{op: "pacct-log", removed: []string{"/var/log/account/pacct.0"}, changed: []string{"/var/log/account/pacct"},
			content: map[string]string{"/var/log/account/pacct": ""}},
		{op: "package-manager-cache", removed: []string{"/var/cache/apt/archives/foo.deb", "/var/cache/apk/APKINDEX.66df4a8c.tar.gz"}},
		{op: "package-manager-state", removed: []string{"/lib/apk/db/lock", "/var/lib/pacman/db.lck", "/var/lib/zypp/AnonymousUniqueId"}},
		{op: "pacman-keyring", removed: []string{"/etc/pacman.d/gnupg", "/etc/pacman.d/gnupg/pubring.gpg"}},
		{op: "pam-data", removed: []string{"/var/run/faillock/root"}},
		{op: "passwd-backups", removed: []string{"/etc/shadow-"}},
		{op: "passwords", changed: []string{"/etc/shadow"}, content: map[string]string{"/etc/shadow": "root:*:19700:0:99999:7:::\n" +
			"nobody:*:19700:0:99999:7:::\nu:*:19700:0:99999:7:::\nv:!:19700::::::\n"}},
		{op: "puppet-data-log", removed: []string{"/var/log/puppet/puppet.log"}},
		{op: "random-seed", removed: []string{"/var/lib/systemd/random-seed"}},
		{op: "remove-paths"},
		{op: "remove-paths", opts: Options{RemovePaths: []string{"/opt/*"}}, removed: []string{"/opt/junk", "/opt/junk/a"}},
		{op: "rh-subscription-manager", removed: []string{"/etc/pki/consumer/cert.pem"}},
		{op: "rhn-systemid", removed: []string{"/etc/sysconfig/rhn/systemid"}},
		{op: "rpm-db", removed: []string{"/var/lib/rpm/__db.001"}},
		{op: "samba-db-log", removed: []string{"/var/log/samba/log.smbd"}},
		{op: "smolt-uuid", removed: []string{"/etc/smolt/uuid"}},
		{op: "ssh-hostkeys", removed: []string{"/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"}},
		{op: "ssh-userdir", removed: []string{"/root/.ssh", "/root/.ssh/authorized_keys", "/home/u/.ssh", "/home/u/.ssh/id_rsa",
			"/var/lib/git/.ssh", "/var/lib/git/.ssh/authorized_keys"}},
		{op: "sssd-db-log", removed: []string{"/var/log/sssd/sssd.log"}},
		{op: "tmp-files", removed: []string{"/tmp/.X11-unix", "/tmp/.X11-unix/X0", "/tmp/a", "/var/tmp/b"}},
		{op: "udev-persistent-net", removed: []string{"/etc/udev/rules.d/70-persistent-net.rules"}},
		{op: "user-account", removed: home, changed: []string{"/etc/group", "/etc/passwd", "/etc/shadow"}, content: map[string]string{
			"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" +
				"git:x:998:998:git:/var/lib/git:/bin/sh\n",
			"/etc/group": "root:x:0:\nshadow:x:42:\nnogroup:x:65534:\nwheel:x:10:root\n",
		}},
		{op: "utmp", removed: []string{"/var/run/utmp"}},
		{op: "yum-uuid", removed: []string{"/var/lib/yum/uuid"}},
		{op: "zsh-history", removed: []string{"/root/.zsh_history", "/home/u/.zsh_history"}},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.op] = true
		t.Run(tt.op, func(t *testing.T) {
			t.Parallel()
			dir, root := newImage(t, testFiles, testLinks)
			before := snapshot(t, dir)
			rep, err := Run(context.Background(), root, opsNamed(t, tt.op), tt.opts)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			after := snapshot(t, dir)
			removed, changed, created := diff(before, after)
			if !reflect.DeepEqual(removed, sorted(tt.removed)) {
				t.Errorf("removed:\n got %q\nwant %q", removed, sorted(tt.removed))
			}
			if !reflect.DeepEqual(changed, sorted(tt.changed)) {
				t.Errorf("changed:\n got %q\nwant %q", changed, sorted(tt.changed))
			}
			if !reflect.DeepEqual(created, sorted(tt.created)) {
				t.Errorf("created:\n got %q\nwant %q", created, sorted(tt.created))
			}
			for p, want := range tt.content {
				got, err := os.ReadFile(filepath.Join(dir, p))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q, %v; want %q", p, got, err, want)
				}
			}
			// The report names exactly the paths that changed.
			reported := map[string]bool{}
			for _, c := range rep.Changes {
				if c.Op != tt.op {
					t.Errorf("change %+v reported under the wrong operation", c)
				}
				reported[c.Path] = true
			}
			var all []string
			all = append(append(append(all, removed...), changed...), created...)
			var rp []string
			for p := range reported {
				rp = append(rp, p)
			}
			if !reflect.DeepEqual(sorted(rp), sorted(all)) {
				t.Errorf("report paths:\n got %q\nwant %q", sorted(rp), sorted(all))
			}
		})
	}
	for _, op := range Operations() {
		if !covered[op.Name] {
			t.Errorf("operation %s has no test case", op.Name)
		}
	}
}

func TestSelect(t *testing.T) {
	var defaults, all []string
	for _, op := range Operations() {
		all = append(all, op.Name)
		if op.Default {
			defaults = append(defaults, op.Name)
		}
	}
	without := func(list []string, drop ...string) []string {
		var out []string
		for _, n := range list {
			if !strings.Contains(" "+strings.Join(drop, " ")+" ", " "+n+" ") {
				out = append(out, n)
			}
		}
		return out
	}
	tests := []struct {
		spec    []string
		want    []string
		wantErr string
	}{
		{spec: nil, want: defaults},
		{spec: []string{"defaults"}, want: defaults},
		{spec: []string{"defaults,-logfiles", "-tmp-files"}, want: without(defaults, "logfiles", "tmp-files")},
		{spec: []string{"defaults", "+user-account"}, want: sorted(append(append([]string{}, defaults...), "user-account"))},
		{spec: []string{"logfiles", "machine-id"}, want: []string{"logfiles", "machine-id"}},
		{spec: []string{"machine-id,logfiles,-machine-id"}, want: []string{"logfiles"}},
		{spec: []string{"all", "-defaults"}, want: without(all, defaults...)},
		{spec: []string{"all"}, want: all},
		{spec: []string{"-logfiles"}, want: nil},
		{spec: []string{"defaults,no-such-op"}, wantErr: `unknown scrub operation "no-such-op"`},
		{spec: []string{"-bogus"}, wantErr: "valid: defaults, all, abrt-data, backup-files"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.spec, " "), func(t *testing.T) {
			ops, err := Select(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, op := range ops {
				got = append(got, op.Name)
			}
			if !reflect.DeepEqual(got, sorted(tt.want)) {
				t.Errorf("got %q\nwant %q", got, sorted(tt.want))
			}
		})
	}
}

func TestOperationsSortedAndDocumented(t *testing.T) {
	ops := Operations()
	table := DocsTable()
	for i, op := range ops {
		if i > 0 && ops[i-1].Name >= op.Name {
			t.Errorf("operations not sorted/unique at %s, %s", ops[i-1].Name, op.Name)
		}
		if op.Description == "" || op.Run == nil {
			t.Errorf("operation %s lacks a description or Run", op.Name)
		}
		if !strings.Contains(table, "| `"+op.Name+"` |") {
			t.Errorf("DocsTable misses %s", op.Name)
		}
	}
	if n := strings.Count(table, "\n"); n != len(ops)+2 {
		t.Errorf("DocsTable has %d lines, want %d", n, len(ops)+2)
	}
	for _, off := range []string{"user-account", "ca-certificates", "firewall-rules", "flag-reconfiguration"} {
		for _, op := range ops {
			if op.Name == off && op.Default {
				t.Errorf("%s must be off by default", off)
			}
		}
	}
}

func TestKeepPaths(t *testing.T) {
	dir, root := newImage(t, testFiles, testLinks)
	opts := Options{KeepPaths: []string{"/var/log/auth.log", "/home/*/.ssh/id_rsa", "/var/lib/cloud/data"}}
	rep, err := Run(context.Background(), root, opsNamed(t, "logfiles", "ssh-userdir", "cloud-init", "user-account"), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/var/log/auth.log", "/home/u/.ssh/id_rsa", "/var/lib/cloud/data/status.json"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
			t.Errorf("kept path %s: %v", p, err)
		}
	}
	for _, p := range []string{"/var/log/syslog", "/root/.ssh", "/home/u/.profile", "/var/lib/cloud/instances"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !os.IsNotExist(err) {
			t.Errorf("%s should be removed: %v", p, err)
		}
	}
	for _, c := range rep.Changes {
		if c.Path == "/home/u" || c.Path == "/home/u/.ssh" {
			t.Errorf("report says %s removed, but it holds a kept path", c.Path)
		}
	}
	if _, err := Run(context.Background(), root, nil, Options{KeepPaths: []string{"relative/*"}}); err == nil {
		t.Error("a relative keep glob was accepted")
	}
}

func TestPasswordsKeepModeAndOwner(t *testing.T) {
	dir, root := newImage(t, testFiles, testLinks)
	shadow := filepath.Join(dir, "etc/shadow")
	if err := os.Chown(shadow, 0, 42); err != nil {
		t.Skipf("chown needs root: %v", err)
	}
	if err := os.Chmod(shadow, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), root, opsNamed(t, "passwords"), Options{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(shadow)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("shadow mode %v, want 0640", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Gid != 42 || st.Uid != 0 {
		t.Errorf("shadow owner %d:%d, want 0:42", st.Uid, st.Gid)
	}
	data, err := os.ReadFile(shadow)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), fixture.RootPasswordHash) || strings.Contains(string(data), "$6$") {
		t.Errorf("a hash survived:\n%s", data)
	}
}

func TestLockHash(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "*"}, {"$6$s$h", "*"}, {"*", "*"}, {"*LK*", "*LK*"}, {"!", "!"}, {"!!", "!!"},
		{"!$6$s$h", "!"}, {"!*", "!*"}, {"x", "*"},
	}
	for _, tt := range tests {
		if got, _ := lockHash(tt.in); got != tt.want {
			t.Errorf("lockHash(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMachineIDDbusSymlinkKept(t *testing.T) {
	files := map[string]string{"/etc/machine-id": "abc\n"}
	dir, root := newImage(t, files, map[string]string{"/var/lib/dbus/machine-id": "/etc/machine-id"})
	if _, err := Run(context.Background(), root, opsNamed(t, "machine-id"), Options{}); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "var/lib/dbus/machine-id")); err != nil || target != "/etc/machine-id" {
		t.Errorf("dbus machine-id link: %q, %v", target, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "etc/machine-id"))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("machine-id mode: %v, %v (want the old 0644 kept)", fi, err)
	}
}

func TestFirstboot(t *testing.T) {
	base := map[string]string{
		"/usr/sbin/sshd": "elf", "/usr/lib/systemd/systemd": "elf", "/etc/ssh/ssh_host_rsa_key": "k",
	}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name    string
		files   map[string]string
		ops     []string
		opts    Options
		want    bool
		keygen  bool
		wantErr string
	}{
		{name: "keys removed, nothing regenerates them", files: base, ops: []string{"defaults"}, want: true, keygen: true},
		{name: "keys kept", files: base, ops: []string{"defaults", "-ssh-hostkeys"}},
		{name: "cloud-init present", files: with(map[string]string{"/usr/bin/cloud-init": "py"}), ops: []string{"defaults"}},
		{name: "sshd-keygen unit", files: with(map[string]string{"/usr/lib/systemd/system/sshd-keygen@.service": "[Unit]"}), ops: []string{"defaults"}},
		{name: "no sshd", files: map[string]string{"/usr/lib/systemd/systemd": "elf"}, ops: []string{"defaults"}},
		{name: "no systemd", files: map[string]string{"/usr/sbin/sshd": "elf"}, ops: []string{"defaults"}},
		{name: "user script", files: with(map[string]string{"/usr/bin/cloud-init": "py"}), ops: []string{"firstboot"},
			opts: Options{FirstbootScript: "#!/bin/sh\necho hi\n"}, want: true},
		{name: "user script without systemd", files: map[string]string{}, ops: []string{"firstboot"},
			opts: Options{FirstbootScript: "#!/bin/sh\n"}, wantErr: "neither systemd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, root := newImage(t, tt.files, nil)
			_, err := Run(context.Background(), root, opsNamed(t, tt.ops...), tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, uerr := os.Stat(filepath.Join(dir, FirstbootUnit))
			if got := uerr == nil; got != tt.want {
				t.Fatalf("unit installed = %v, want %v (%v)", got, tt.want, uerr)
			}
			if !tt.want {
				return
			}
			if target, err := os.Readlink(filepath.Join(dir, FirstbootWantsLink)); err != nil || target != FirstbootUnit {
				t.Errorf("wants link: %q, %v", target, err)
			}
			script, err := os.ReadFile(filepath.Join(dir, FirstbootScriptPath))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(script), "ssh-keygen -A"); got != tt.keygen {
				t.Errorf("script runs ssh-keygen = %v, want %v:\n%s", got, tt.keygen, script)
			}
			if !strings.Contains(string(script), "rm -f "+FirstbootWantsLink) {
				t.Errorf("script does not disable itself:\n%s", script)
			}
			if tt.opts.FirstbootScript != "" {
				user, err := os.ReadFile(filepath.Join(dir, FirstbootUserScript))
				if err != nil || string(user) != tt.opts.FirstbootScript {
					t.Errorf("user script: %q, %v", user, err)
				}
			}
		})
	}
}

func TestReportJSONAndSummary(t *testing.T) {
	_, root := newImage(t, testFiles, testLinks)
	rep, err := Run(context.Background(), root, opsNamed(t, "defaults"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Changes []struct{ Op, Path, Action string } `json:"changes"`
	}
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Changes) != len(rep.Changes) || len(back.Changes) == 0 {
		t.Fatalf("JSON has %d changes, report %d", len(back.Changes), len(rep.Changes))
	}
	if c := back.Changes[0]; c.Op == "" || !strings.HasPrefix(c.Path, "/") || c.Action == "" {
		t.Errorf("first change %+v", c)
	}
	sum := rep.Summary()
	if strings.HasSuffix(sum, "\n") {
		t.Errorf("the summary ends with a newline (an empty line in Packer's output)")
	}
	if got := (&Report{}).Summary(); !strings.Contains(got, "nothing to change") {
		t.Errorf("empty report's summary: %q", got)
	}
	if lines := strings.Count(sum, "\n"); lines > 60 {
		t.Errorf("summary is %d lines", lines)
	}
	for _, op := range []string{"logfiles", "machine-id", "ssh-hostkeys"} {
		if !strings.Contains(sum, op) {
			t.Errorf("summary misses %s:\n%s", op, sum)
		}
	}
	empty, _ := json.Marshal(&Report{})
	if string(empty) != `{"changes":[]}` {
		t.Errorf("empty report JSON = %s", empty)
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	_, root := newImage(t, testFiles, testLinks)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err := Run(ctx, root, opsNamed(t, "defaults"), Options{})
	if err == nil || len(rep.Changes) != 0 {
		t.Fatalf("cancelled run: err %v, %d changes", err, len(rep.Changes))
	}
}
