package chrootprep

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// PolicyRcD is the hook Debian's invoke-rc.d and deb-systemd-invoke ask
// before starting a service; exit 101 means "action forbidden".
const PolicyRcD = "/usr/sbin/policy-rc.d"

var policyRcDContent = []byte("#!/bin/sh\n# Put here by imagefactory for the build: no service starts in the chroot.\nexit 101\n")

// ServicePaths are where distributions keep service(8): Debian's
// init-system-helpers, RHEL's initscripts-service, SUSE's aaa_base. With no
// systemd running, each runs /etc/init.d/NAME itself (Debian's when
// /run/systemd/system is absent, as in our chroot; RHEL's whenever the
// script exists), which would start the daemon on the build host.
var ServicePaths = []string{"/usr/sbin/service", "/sbin/service"}

// serviceWrapper stands in for the image's service(8) during the build:
// actions that start or stop a daemon are refused (exit 0, as a package's
// scriptlet expects; a stop would kill a host process of the same name),
// anything else goes to the image's own, moved aside by swap.
func serviceWrapper(name string) []byte {
	return []byte(`#!/bin/sh
# Put here by imagefactory for the build: no service starts in the chroot.
for arg do
	case $arg in
	start|stop|restart|reload|force-reload|try-restart|condrestart|reload-or-restart|--full-restart)
		echo "service $*: not run in the build's chroot (imagefactory)" >&2
		exit 0 ;;
	esac
done
exec ` + name + backupSuffix + ` "$@"
`)
}

// SystemctlPaths and OpenRCPaths tell a systemd or an OpenRC image.
var (
	SystemctlPaths = []string{"/usr/bin/systemctl", "/bin/systemctl"}
	OpenRCPaths    = []string{"/sbin/openrc-run", "/usr/sbin/openrc-run", "/sbin/openrc"}
)

// OpenRCSoftlevel is the file OpenRC writes once it has booted a runlevel;
// while it is absent, openrc-run (rc-service, /etc/init.d/NAME start)
// refuses to start anything ("openrc did not boot"). It lives on /run,
// which the chroot gets as a fresh tmpfs (mounts.DefaultChrootMounts).
const OpenRCSoftlevel = "/run/openrc/softlevel"

// BlockServices stops package installs and provisioners from starting
// services in the chroot, where they would run on the build host. It runs
// once the chroot's mounts are in place, and returns what it did, one
// line per measure, in the order:
//   - Debian family: /usr/sbin/policy-rc.d exiting 101, asked by
//     invoke-rc.d and deb-systemd-invoke (Debian Policy 9.3.3);
//   - any image with service(8) (ServicePaths): a wrapper refusing start,
//     stop, restart and reload, the hole no policy-rc.d plugs;
//   - systemd images: nothing to write: systemctl refuses start, stop and
//     restart offline ("Running in chroot, ignoring command"), which the
//     chroot communicator forces with SYSTEMD_OFFLINE=1 (systemd >= 250),
//     since systemd's own chroot test reads /proc/1/root and fails where
//     that is not readable (containers);
//   - OpenRC images: checks that OpenRCSoftlevel is absent in the chroot.
//     It is an error when it is present (a chroot_mounts bind of a booted
//     /run), since OpenRC would then start services.
//
// An image with none of these gets no measure, a no-op Restore and no
// error. Restore puts every file back as it was.
func BlockServices(root *inroot.Root) (restore Restore, did []string, err error) {
	var restores []Restore
	undo := func() error {
		var errs []error
		for i := len(restores) - 1; i >= 0; i-- {
			errs = append(errs, restores[i]())
		}
		return errors.Join(errs...)
	}
	fail := func(err error) (Restore, []string, error) {
		if uerr := undo(); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return nil, nil, err
	}
	if _, err := root.Lstat("/etc/debian_version"); err == nil {
		if err := root.MkdirAll("/usr/sbin", 0o755); err != nil {
			return fail(fmt.Errorf("creating /usr/sbin in the image for %s: %w", PolicyRcD, err))
		}
		r, err := swap(root, PolicyRcD, policyRcDContent, 0o755)
		if err != nil {
			return fail(err)
		}
		restores = append(restores, r)
		did = append(did, PolicyRcD+" (exit 101)")
	}
	for _, name := range serviceFiles(root) {
		r, err := swap(root, name, serviceWrapper(name), 0o755)
		if err != nil {
			return fail(err)
		}
		restores = append(restores, r)
		did = append(did, name+" wrapped (no start, stop, restart or reload)")
	}
	if anyExists(root, SystemctlPaths) {
		did = append(did, "systemctl offline (SYSTEMD_OFFLINE=1)")
	}
	if anyExists(root, OpenRCPaths) {
		if _, err := root.Lstat(OpenRCSoftlevel); err == nil {
			return fail(fmt.Errorf("the chroot has %s, so OpenRC would start the image's services on the build host; "+
				"do not bind a booted /run into the chroot (chroot_mounts), or set allow_service_starts", OpenRCSoftlevel))
		} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fail(fmt.Errorf("inspecting %s in the chroot: %w", OpenRCSoftlevel, err))
		}
		did = append(did, "OpenRC not booted (no "+OpenRCSoftlevel+")")
	}
	done := false
	return func() error {
		if done {
			return nil
		}
		err := undo()
		if err == nil {
			done = true
		}
		return err
	}, did, nil
}

func anyExists(root *inroot.Root, names []string) bool {
	for _, n := range names {
		if _, err := root.Lstat(n); err == nil {
			return true
		}
	}
	return false
}

// serviceFiles are the ServicePaths that are regular files, each file once
// (with /sbin -> usr/sbin both paths name one), found before any is
// replaced.
func serviceFiles(root *inroot.Root) []string {
	var names []string
	seen := map[[2]uint64]bool{}
	for _, name := range ServicePaths {
		fi, err := root.Lstat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue // absent, or a symlink (to systemctl, or to the other path)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			id := [2]uint64{st.Dev, st.Ino}
			if seen[id] {
				continue
			}
			seen[id] = true
		}
		names = append(names, name)
	}
	return names
}
