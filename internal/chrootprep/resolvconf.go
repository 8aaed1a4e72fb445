package chrootprep

import (
	"fmt"
	"os"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// ResolvConfPath is where the image keeps its resolver configuration.
const ResolvConfPath = "/etc/resolv.conf"

// CopyResolvConf puts the host's resolver configuration (read from
// hostFile, following the host's own links) at /etc/resolv.conf in the
// image. The image's own file or symlink comes back exactly on Restore —
// unlike copy-then-delete, which leaves images without one.
func CopyResolvConf(root *inroot.Root, hostFile string) (Restore, error) {
	data, err := os.ReadFile(hostFile)
	if err != nil {
		return nil, fmt.Errorf("reading the host's resolver configuration: %w", err)
	}
	if err := root.MkdirAll("/etc", 0o755); err != nil {
		return nil, fmt.Errorf("creating /etc in the image: %w", err)
	}
	return swap(root, ResolvConfPath, data, 0o644)
}

// BindTarget checks that the image's /etc/resolv.conf can be bound over:
// a bind mount needs a regular file to cover, and a symlink would send it
// elsewhere (into the chroot's empty /run, typically).
func BindTarget(root *inroot.Root) error {
	fi, err := root.Lstat(ResolvConfPath)
	if err != nil {
		return fmt.Errorf("resolv_conf = bind: the image has no %s to bind over (%v); use copy", ResolvConfPath, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("resolv_conf = bind: the image's %s is a %s, not a regular file; use copy", ResolvConfPath, fi.Mode().Type())
	}
	return nil
}
