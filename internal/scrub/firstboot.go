package scrub

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// Files the firstboot operation installs.
const (
	FirstbootUnit       = "/etc/systemd/system/imagefactory-firstboot.service"
	FirstbootWantsLink  = "/etc/systemd/system/multi-user.target.wants/imagefactory-firstboot.service"
	FirstbootScriptPath = "/usr/local/libexec/imagefactory-firstboot"
	FirstbootUserScript = "/usr/local/libexec/imagefactory-firstboot-user"

	// On an OpenRC image: the service, and its link in the default
	// runlevel (absolute, as rc-update(8) makes it).
	FirstbootOpenRCService = "/etc/init.d/imagefactory-firstboot"
	FirstbootRunlevelLink  = "/etc/runlevels/default/imagefactory-firstboot"
)

// Something in the image that regenerates SSH host keys at boot by itself.
var (
	cloudInitMarkers = []string{"/usr/bin/cloud-init", "/etc/cloud/cloud.cfg"}
	keygenUnits      = []string{
		"/usr/lib/systemd/system/sshd-keygen.service", "/usr/lib/systemd/system/sshd-keygen@.service",
		"/lib/systemd/system/sshd-keygen.service", "/lib/systemd/system/sshd-keygen@.service",
		"/etc/systemd/system/sshd-keygen.service", "/etc/systemd/system/sshd-keygen@.service",
		"/usr/lib/systemd/system/ssh-keygen.service", "/lib/systemd/system/ssh-keygen.service",
	}
	sshdBinaries   = []string{"/usr/sbin/sshd", "/usr/bin/sshd"}
	systemdMarkers = []string{"/usr/lib/systemd/systemd", "/lib/systemd/systemd"}
	// OpenRC's service interpreter and runlevel directory (openrc's
	// APKBUILD, openrc-run(8)).
	openrcMarkers = []string{"/sbin/openrc-run", "/usr/sbin/openrc-run", "/etc/runlevels"}
)

// openrcSSHDInit is Alpine's sshd service: its start_pre (checkconfig) runs
// `ssh-keygen -A` unless sshd_disable_keygen in its conf.d file says yes
// (aports main/openssh/sshd.initd).
const (
	openrcSSHDInit = "/etc/init.d/sshd"
	openrcSSHDConf = "/etc/conf.d/sshd"
)

// firstbootOpenRCText is an openrc-run(8) service; the script it runs
// removes the runlevel link, as Alpine's own firstboot service removes
// itself (aports main/openrc/firstboot.initd). An init.d service rather
// than /etc/local.d/*.start: the local service runs after every other one
// (its depend says after *), so sshd would start before the keys exist,
// and Alpine's default runlevel does not have local.
const firstbootOpenRCText = `#!/sbin/openrc-run
# Installed by imagefactory's scrub (firstboot operation).
description="imagefactory first boot: regenerate SSH host keys, run once"

depend() {
	need localmount
	before sshd dropbear
}

start() {
	ebegin "imagefactory first boot"
	` + FirstbootScriptPath + `
	eend $?
}
`

const firstbootUnitText = `# Installed by imagefactory's scrub (firstboot operation).
[Unit]
Description=imagefactory first boot: regenerate SSH host keys, run once
After=local-fs.target
Before=ssh.service sshd.service network-online.target

[Service]
Type=oneshot
ExecStart=` + FirstbootScriptPath + `
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`

// firstbootScriptText is the first-boot script; disable is the link whose
// removal keeps it from running again.
func firstbootScriptText(keygen, user bool, disable string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Installed by imagefactory's scrub (firstboot operation). Runs once, then disables itself.\n")
	if keygen {
		b.WriteString("if command -v ssh-keygen >/dev/null 2>&1; then ssh-keygen -A; fi\n")
	}
	if user {
		b.WriteString("if [ -x " + FirstbootUserScript + " ]; then " + FirstbootUserScript + " || echo \"imagefactory-firstboot: user script failed: $?\" >&2; fi\n")
	}
	b.WriteString("rm -f " + disable + "\n")
	return b.String()
}

func anyExists(c *Context, paths []string) (bool, error) {
	for _, p := range paths {
		ok, err := c.Root.Exists(p)
		if err != nil && !skippable(err) {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// needKeygen: SSH host keys are being removed and nothing else in the image
// will make new ones (sshd will not start without them).
func needKeygen(c *Context) (bool, error) {
	if !c.Selected("ssh-hostkeys") {
		return false, nil
	}
	for _, set := range [][]string{cloudInitMarkers, keygenUnits} {
		if ok, err := anyExists(c, set); err != nil || ok {
			return false, err
		}
	}
	if ok, err := openrcSSHDKeygen(c); err != nil || ok {
		return false, err
	}
	return anyExists(c, sshdBinaries)
}

// openrcSSHDKeygen: the image's OpenRC sshd service makes missing host keys
// itself before sshd starts (Alpine's does, unless sshd_disable_keygen is
// yes, as OpenRC's yesno reads it).
func openrcSSHDKeygen(c *Context) (bool, error) {
	data, _, ok, err := c.regularFile(openrcSSHDInit)
	if err != nil || !ok || !strings.Contains(string(data), "ssh-keygen -A") {
		return false, err
	}
	conf, _, _, err := c.regularFile(openrcSSHDConf)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(conf), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || (k != "sshd_disable_keygen" && k != "SSHD_DISABLE_KEYGEN") {
			continue
		}
		switch strings.ToLower(strings.Trim(v, `"'`)) {
		case "yes", "true", "on", "1":
			return false, nil
		}
	}
	return true, nil
}

// initSystem is "systemd", "openrc" or "" (neither found).
func initSystem(c *Context) (string, error) {
	if ok, err := anyExists(c, systemdMarkers); err != nil || ok {
		return "systemd", err
	}
	if ok, err := anyExists(c, openrcMarkers); err != nil || ok {
		return "openrc", err
	}
	return "", nil
}

func firstbootOp() Operation {
	return Operation{
		Name: "firstboot",
		Description: "When SSH host keys are removed (`ssh-hostkeys`), sshd is installed, and neither cloud-init, an " +
			"`sshd-keygen` unit nor an OpenRC `" + openrcSSHDInit + "` that runs `ssh-keygen -A` (Alpine's, unless " +
			"`sshd_disable_keygen` is yes) will regenerate them, or when `firstboot_script` is set: install `" + FirstbootUnit +
			"` (enabled in `multi-user.target.wants`) running `ssh-keygen -A` and the script once at first boot. " +
			"On an OpenRC image (no systemd; `/sbin/openrc-run` or `/etc/runlevels`) the service is `" + FirstbootOpenRCService +
			"` (before sshd, in the `default` runlevel), which removes itself from the runlevel after its run.",
		Default: true,
		Run: func(c *Context) error {
			keygen, err := needKeygen(c)
			if err != nil {
				return err
			}
			user := c.Options.FirstbootScript != ""
			if !keygen && !user {
				return nil
			}
			init, err := initSystem(c)
			if err != nil {
				return err
			}
			if init == "" {
				if user {
					return fmt.Errorf("firstboot_script is set but the image has neither systemd (%s) nor OpenRC (%s), the inits this operation supports",
						strings.Join(systemdMarkers, ", "), strings.Join(openrcMarkers, ", "))
				}
				return nil
			}
			unit, unitText, link, dirs := FirstbootUnit, firstbootUnitText, FirstbootWantsLink,
				[]string{"/etc/systemd/system/multi-user.target.wants", "/usr/local/libexec"}
			if init == "openrc" {
				unit, unitText, link, dirs = FirstbootOpenRCService, firstbootOpenRCText, FirstbootRunlevelLink,
					[]string{"/etc/init.d", "/etc/runlevels/default", "/usr/local/libexec"}
			}
			var errs []error
			for _, d := range dirs {
				if err := c.Root.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			if user {
				errs = append(errs, c.writeFile(FirstbootUserScript, []byte(c.Options.FirstbootScript), 0o700))
			}
			unitMode := fs.FileMode(0o644)
			if init == "openrc" {
				unitMode = 0o755
			}
			errs = append(errs,
				c.writeFile(FirstbootScriptPath, []byte(firstbootScriptText(keygen, user, link)), 0o755),
				c.writeFile(unit, []byte(unitText), unitMode))
			if err := errors.Join(errs...); err != nil {
				return err
			}
			if c.kept(link) {
				return nil
			}
			if err := c.Root.RemoveAll(link); err != nil {
				return err
			}
			if err := c.Root.Symlink(unit, link); err != nil {
				return err
			}
			c.Report.add(c.op, link, Created)
			return nil
		},
	}
}
