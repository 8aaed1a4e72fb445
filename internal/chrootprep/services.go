package chrootprep

import (
	"fmt"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// PolicyRcD is the hook Debian's invoke-rc.d and deb-systemd-invoke ask
// before starting a service; exit 101 means "action forbidden".
const PolicyRcD = "/usr/sbin/policy-rc.d"

var policyRcDContent = []byte("#!/bin/sh\n# Put here by imagefactory for the build: no service starts in the chroot.\nexit 101\n")

// BlockServices stops package installs from starting services in the
// chroot, where they would run on the build host. It applies to
// Debian-family images; others need nothing (systemctl refuses to start
// units in a chroot) and get a no-op Restore and ok=false.
func BlockServices(root *inroot.Root) (restore Restore, ok bool, err error) {
	if _, err := root.Lstat("/etc/debian_version"); err != nil {
		return func() error { return nil }, false, nil
	}
	if err := root.MkdirAll("/usr/sbin", 0o755); err != nil {
		return nil, false, fmt.Errorf("creating /usr/sbin in the image for %s: %w", PolicyRcD, err)
	}
	r, err := swap(root, PolicyRcD, policyRcDContent, 0o755)
	return r, err == nil, err
}
