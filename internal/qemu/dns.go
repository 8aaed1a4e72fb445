package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"syscall"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// UserNetDNS is the resolver QEMU's user-mode network offers the guest.
const UserNetDNS = "10.0.2.3"

const resolvConf = "/etc/resolv.conf"

var nameserverLine = regexp.MustCompile(`(?m)^\s*nameserver\s+\S`)

// resolvState is the image's /etc/resolv.conf before the boot, when the
// build had to give the guest a resolver.
type resolvState struct {
	existed bool
	data    []byte
	mode    fs.FileMode
	uid     int
	gid     int
}

// recordResolv decides whether the boot needs a resolver of the build's:
// images made from a bare tree (debootstrap, our fixtures) ship an empty
// resolv.conf and nothing in them fills it, so provisioners could not
// resolve the archive's name. A symlink (systemd-resolved, resolvconf)
// or a file naming a nameserver is the image's own way and is left alone.
func (g *GuestState) recordResolv(root *inroot.Root) error {
	fi, err := root.Lstat(resolvConf)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		g.resolv = &resolvState{}
		return nil
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return nil
	}
	data, err := root.ReadFile(resolvConf)
	if err != nil {
		return err
	}
	if nameserverLine.Match(data) {
		return nil
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	r := &resolvState{existed: true, data: data, mode: fi.Mode().Perm()}
	if st != nil {
		r.uid, r.gid = int(st.Uid), int(st.Gid)
	}
	g.resolv = r
	return nil
}

// resolverText is what the guest gets for the boot.
const resolverText = "# Written by the imagefactory build for its boot under QEMU; the image's own file is put back after it.\nnameserver " + UserNetDNS + "\n"

// ProvideDNS writes QEMU's user-network resolver into the image when it
// has none (see recordResolv); Undo puts the image's file back. It says
// whether it wrote anything.
func (g *GuestState) ProvideDNS(root *inroot.Root) (bool, error) {
	if g.resolv == nil {
		return false, nil
	}
	if err := root.WriteFile(resolvConf, []byte(resolverText), 0o644); err != nil {
		return false, fmt.Errorf("resolv.conf for the boot: %w", err)
	}
	g.wroteResolv = true
	return true, nil
}

// restoreResolv puts back the image's resolv.conf as it was before the
// boot, whatever the boot made of it (a DHCP client may rewrite it). It
// returns the change made, or "".
func (g *GuestState) restoreResolv(root *inroot.Root) (scrub.Action, error) {
	if !g.wroteResolv {
		return "", nil
	}
	r := g.resolv
	if !r.existed {
		if err := root.RemoveAll(resolvConf); err != nil {
			return "", err
		}
		g.wroteResolv = false
		return scrub.Removed, nil
	}
	if cur, err := root.ReadFile(resolvConf); err == nil && bytes.Equal(cur, r.data) {
		g.wroteResolv = false
		return "", nil
	}
	if err := root.RemoveAll(resolvConf); err != nil { // a symlink the boot made, say
		return "", err
	}
	if err := root.WriteFile(resolvConf, r.data, r.mode); err != nil {
		return "", err
	}
	if err := root.Lchown(resolvConf, r.uid, r.gid); err != nil {
		return "", err
	}
	g.wroteResolv = false
	return scrub.Changed, nil
}
