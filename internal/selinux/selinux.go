// Package selinux relabels what a build changed in an SELinux image, with
// the image's own policy, offline.
//
// An image asks for SELinux in /etc/selinux/config (selinux_config(5)):
// SELINUX=enforcing|permissive|disabled and SELINUXTYPE=NAME, the policy
// whose file contexts are /etc/selinux/NAME/contexts/files/file_contexts.
// Files a chroot writes on a host without SELinux get no security.selinux
// extended attribute; an enforcing system refuses logins or denies
// services on unlabelled files. setfiles(8) sets the labels the file
// contexts give, offline (it needs no loaded policy: with SELinux disabled
// on the host, contexts are not validated and the xattrs are written
// as given).
//
// The image is read only through internal/inroot (DESIGN.md #3); the
// image's setfiles runs inside the chroot (Runner), the host's is given
// only paths found by a walk that never follows a symlink.
package selinux

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// ConfigPath is the image's SELinux configuration (selinux_config(5)).
const ConfigPath = "/etc/selinux/config"

// AutorelabelPath asks the image's init to relabel the whole tree at the
// next boot (fixfiles(8); Fedora's selinux-autorelabel, Debian's
// selinux-basics); virt-customize --selinux-relabel touches it too when
// it cannot relabel itself.
const AutorelabelPath = "/.autorelabel"

// defaultType is libselinux's SELINUXTYPE when the config names none
// (SELINUXDEFAULT in libselinux/src/selinux_config.c).
const defaultType = "targeted"

// Mode is SELINUX= of the config.
type Mode string

// Modes of selinux_config(5).
const (
	Enforcing  Mode = "enforcing"
	Permissive Mode = "permissive"
	Disabled   Mode = "disabled"
)

// Config is what /etc/selinux/config says.
type Config struct {
	Mode Mode   // "" when the file has no valid SELINUX= line
	Type string // SELINUXTYPE=, defaultType when absent
}

// Wants reports whether the image labels its files at run time: enforcing
// or permissive.
func (c Config) Wants() bool { return c.Mode == Enforcing || c.Mode == Permissive }

// ParseConfig reads the text of /etc/selinux/config as libselinux does
// (selinux_config.c): SELINUX= compared case-insensitively by prefix,
// SELINUXTYPE= taken verbatim, '#' lines and blanks ignored. The last line
// of a key wins.
func ParseConfig(data []byte) Config {
	c := Config{Type: defaultType}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		switch {
		case strings.HasPrefix(line, "SELINUX="):
			v := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(line, "SELINUX=")))
			c.Mode = ""
			for _, m := range []Mode{Enforcing, Permissive, Disabled} {
				if strings.HasPrefix(v, string(m)) {
					c.Mode = m
				}
			}
		case strings.HasPrefix(line, "SELINUXTYPE="):
			if v := strings.TrimSpace(strings.TrimPrefix(line, "SELINUXTYPE=")); v != "" {
				c.Type = v
			}
		}
	}
	return c
}

// ReadConfig reads the image's /etc/selinux/config. ok is false when the
// image has none (no SELinux).
func ReadConfig(root *inroot.Root) (c Config, ok bool, err error) {
	data, err := root.ReadFile(ConfigPath)
	if errors.Is(err, fs.ErrNotExist) {
		return Config{}, false, nil
	}
	if err != nil {
		return Config{}, false, fmt.Errorf("reading the image's %s: %w", ConfigPath, err)
	}
	return ParseConfig(data), true, nil
}

// FileContexts is the image path of a policy's file contexts. setfiles
// also reads file_contexts.homedirs and file_contexts.local beside it (and
// file_contexts.subs*), as libselinux's label_file.c does for every spec
// file not opened "base only".
func FileContexts(policyType string) string {
	return path.Join("/etc/selinux", policyType, "contexts/files/file_contexts")
}

// NoPolicyError is an image whose config asks for a policy it does not
// have.
type NoPolicyError struct {
	Config Config
	Path   string // the missing file contexts, inside the image
}

func (e *NoPolicyError) Error() string {
	return fmt.Sprintf("the image's %s says SELINUX=%s and SELINUXTYPE=%s, but the image has no %s: "+
		"install that policy in the image (the package providing it, e.g. selinux-policy-%s), "+
		"or set selinux_relabel = \"firstboot\" (relabel at first boot) or \"off\"",
		ConfigPath, e.Config.Mode, e.Config.Type, e.Path, e.Config.Type)
}

// CheckType refuses a SELINUXTYPE that could leave /etc/selinux.
func CheckType(t string) error {
	if t == "" || t == "." || t == ".." || strings.ContainsAny(t, "/\x00") {
		return fmt.Errorf("the image's %s has SELINUXTYPE=%q, which is not a policy name", ConfigPath, t)
	}
	return nil
}

// FindPolicy returns the image path of the file contexts of c's policy,
// or a *NoPolicyError when the image lacks them.
func FindPolicy(root *inroot.Root, c Config) (string, error) {
	if err := CheckType(c.Type); err != nil {
		return "", err
	}
	fc := FileContexts(c.Type)
	fi, err := root.Stat(fc)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.Mode().IsRegular()) {
		return "", &NoPolicyError{Config: c, Path: fc}
	}
	if err != nil {
		return "", fmt.Errorf("the image's SELinux file contexts: %w", err)
	}
	return fc, nil
}

// ImageSetfiles are where images keep setfiles (policycoreutils), in the
// order looked at.
var ImageSetfiles = []string{"/usr/sbin/setfiles", "/sbin/setfiles"}

// FindImageSetfiles returns the image path of its own setfiles, or "" when
// it has none. A symlink is followed inside the image.
func FindImageSetfiles(root *inroot.Root) string {
	for _, p := range ImageSetfiles {
		if fi, err := root.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}
