package scrub

import (
	"errors"
	"fmt"
	"strings"
)

// Files the firstboot operation installs.
const (
	FirstbootUnit       = "/etc/systemd/system/imagefactory-firstboot.service"
	FirstbootWantsLink  = "/etc/systemd/system/multi-user.target.wants/imagefactory-firstboot.service"
	FirstbootScriptPath = "/usr/local/libexec/imagefactory-firstboot"
	FirstbootUserScript = "/usr/local/libexec/imagefactory-firstboot-user"
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
)

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

func firstbootScriptText(keygen, user bool) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Installed by imagefactory's scrub (firstboot operation). Runs once, then disables itself.\n")
	if keygen {
		b.WriteString("if command -v ssh-keygen >/dev/null 2>&1; then ssh-keygen -A; fi\n")
	}
	if user {
		b.WriteString("if [ -x " + FirstbootUserScript + " ]; then " + FirstbootUserScript + " || echo \"imagefactory-firstboot: user script failed: $?\" >&2; fi\n")
	}
	b.WriteString("rm -f " + FirstbootWantsLink + "\n")
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
	return anyExists(c, sshdBinaries)
}

func firstbootOp() Operation {
	return Operation{
		Name: "firstboot",
		Description: "When SSH host keys are removed (`ssh-hostkeys`), sshd is installed, and neither cloud-init nor an " +
			"`sshd-keygen` unit will regenerate them, or when `firstboot_script` is set: install `" + FirstbootUnit +
			"` (enabled in `multi-user.target.wants`) running `ssh-keygen -A` and the script once at first boot. Needs systemd.",
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
			systemd, err := anyExists(c, systemdMarkers)
			if err != nil {
				return err
			}
			if !systemd {
				if user {
					return fmt.Errorf("firstboot_script is set but the image has no systemd (%s), the only init this operation supports", strings.Join(systemdMarkers, ", "))
				}
				return nil
			}
			var errs []error
			for _, d := range []string{"/etc/systemd/system/multi-user.target.wants", "/usr/local/libexec"} {
				if err := c.Root.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			if user {
				errs = append(errs, c.writeFile(FirstbootUserScript, []byte(c.Options.FirstbootScript), 0o700))
			}
			errs = append(errs,
				c.writeFile(FirstbootScriptPath, []byte(firstbootScriptText(keygen, user)), 0o755),
				c.writeFile(FirstbootUnit, []byte(firstbootUnitText), 0o644))
			if err := errors.Join(errs...); err != nil {
				return err
			}
			if c.kept(FirstbootWantsLink) {
				return nil
			}
			if err := c.Root.RemoveAll(FirstbootWantsLink); err != nil {
				return err
			}
			if err := c.Root.Symlink(FirstbootUnit, FirstbootWantsLink); err != nil {
				return err
			}
			c.Report.add(c.op, FirstbootWantsLink, Created)
			return nil
		},
	}
}
