package qemu

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// UserNetDNS is the resolver QEMU's user-mode network offers the guest.
const UserNetDNS = "10.0.2.3"

const resolvConf = "/etc/resolv.conf"

var nameserverLine = regexp.MustCompile(`(?m)^\s*nameserver\s+\S`)

// needsResolver says whether the boot needs a resolver of the build's:
// images made from a bare tree (debootstrap, our fixtures) ship an empty
// resolv.conf and nothing in them fills it, so provisioners could not
// resolve the archive's name. A symlink (systemd-resolved, resolvconf)
// or a file naming a nameserver is the image's own way and is left alone.
func needsResolver(root *inroot.Root) (bool, error) {
	fi, err := root.Lstat(resolvConf)
	switch {
	case isMissing(err):
		return true, nil
	case err != nil:
		return false, err
	case !fi.Mode().IsRegular():
		return false, nil
	}
	data, err := root.ReadFile(resolvConf)
	if err != nil {
		return false, err
	}
	return !nameserverLine.Match(data), nil
}

// resolverText is what the guest gets for the boot.
const resolverText = "# Written by the imagefactory build for its boot under QEMU; the image's own file is put back after it.\nnameserver " + UserNetDNS + "\n"

// ProvideDNS writes QEMU's user-network resolver into the image when it
// has none (see needsResolver); Undo puts the image's file back (it is
// one of bootWatched), or, when a provisioner changed it, cuts the
// build's lines out of it. It says whether it wrote anything.
func (g *GuestState) ProvideDNS(root *inroot.Root) (bool, error) {
	if !g.needDNS {
		return false, nil
	}
	var old []byte
	if e := g.snap.entries[resolvConf]; e != nil && e.kind == kindFile {
		old = e.data
	}
	if err := root.WriteFile(resolvConf, []byte(resolverText), 0o644); err != nil {
		return false, fmt.Errorf("resolv.conf for the boot: %w", err)
	}
	g.snap.stamp(root, resolvConf)
	// A provisioner may add to it: their lines stay, the image's come back
	// in place of the build's.
	g.snap.blocks[resolvConf] = &buildBlock{text: resolverText, replaced: string(old),
		traces: []string{resolverText[:strings.IndexByte(resolverText, '\n')]}}
	return true, nil
}
