package boottest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fuseexport"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/session"
)

// image is what the image held before its boot, read offline.
type image struct {
	target    qemu.Target
	cpu, why  string
	hostKeys  map[string]string // marshalled public key -> the image file it came from
	machineID string            // /etc/machine-id as it was ("" if none)
	systemd   bool
	cloudInit bool   // cloud-init installed and not disabled
	seed      string // the NoCloud seed written for the boot, or ""
}

// readImage reads the image through the overlay's raw view (a FUSE export:
// this kernel has no NBD) and, for SSH, gives the user the run's key: a
// NoCloud seed when the image has cloud-init, else the key in the
// overlay's authorized_keys (and an sshd drop-in for root), offline.
func readImage(ctx context.Context, o Options, overlay, dir string, key qemu.Key) (img *image, err error) {
	exp, err := fuseexport.Open(ctx, overlay, "qcow2", o.Journal)
	if err != nil {
		if errors.Is(err, fuseexport.ErrUnavailable) {
			return nil, fmt.Errorf("reading %s before its boot needs a FUSE export of its overlay: %w", o.Disk, err)
		}
		return nil, err
	}
	defer func() { err = errors.Join(err, exp.Close()) }()
	sess, err := session.Open(ctx, session.Options{
		Disk: exp.Path, Journal: o.Journal, MountPath: filepath.Join(dir, "root"),
	}, false)
	if err != nil {
		return nil, fmt.Errorf("reading %s before its boot: %w", o.Disk, err)
	}
	defer func() { err = errors.Join(err, sess.Close()) }()
	root := sess.RootFS()

	img = &image{}
	a, aerr := arch.OfImage(root)
	if aerr != nil {
		o.Log(fmt.Sprintf("Warning: reading the image's architecture: %v; booting it as the host's", aerr))
	}
	if img.target, err = qemu.ChooseTarget(a, o.Machine); err != nil {
		return nil, err
	}
	img.cpu, img.why = o.CPU, "cpu_model"
	if img.cpu == "" {
		if img.cpu, img.why, err = qemu.ImageCPUModel(img.target, root); err != nil {
			return nil, err
		}
	}
	if img.hostKeys, err = hostKeys(root); err != nil {
		return nil, err
	}
	if id, err := root.ReadFile("/etc/machine-id"); err == nil {
		img.machineID = strings.TrimSpace(string(id))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	img.systemd = exists(root, "/usr/lib/systemd/systemd", "/lib/systemd/systemd")
	img.cloudInit = exists(root, "/usr/bin/cloud-init") && !exists(root, "/etc/cloud/cloud-init.disabled")
	if !o.SSH {
		return img, nil
	}
	if img.cloudInit {
		// As a cloud's first boot: cloud-init sets the hostname from the
		// meta-data and may regenerate host keys; the user gets the key.
		img.seed = filepath.Join(dir, "seed.iso")
		name := "boottest-" + filepath.Base(dir)
		err := qemu.WriteSeed(img.seed, qemu.Seed{
			UserData: qemu.UserData(o.SSHUser, key.AuthorizedKey, false),
			MetaData: qemu.DefaultMetaData(name, name),
		})
		if err != nil {
			return nil, err
		}
		o.Log("The image has cloud-init: SSH through a NoCloud seed (" + qemu.SeedLabel + ")")
		return img, nil
	}
	g, err := qemu.Inspect(root, o.SSHUser, key.AuthorizedKey)
	if err != nil {
		return nil, err
	}
	if err := g.InjectKey(root); err != nil {
		return nil, err
	}
	for _, w := range g.Warnings {
		o.Log("Warning: " + w)
	}
	o.Log(fmt.Sprintf("Put the run's key in %s/.ssh/authorized_keys, in the overlay only", g.Home))
	return img, nil
}

// hostKeys reads the image's SSH host keys, from /etc/ssh/ssh_host_*_key.pub
// and from the private keys (whose public half the .pub may lack).
func hostKeys(root *inroot.Root) (map[string]string, error) {
	keys := map[string]string{}
	f, err := root.Open("/etc/ssh")
	if errors.Is(err, fs.ErrNotExist) {
		return keys, nil
	}
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	for _, n := range names {
		if !strings.HasPrefix(n, "ssh_host_") {
			continue
		}
		p := path.Join("/etc/ssh", n)
		data, err := root.ReadFile(p)
		if err != nil {
			continue // a directory, a dangling link: not a key
		}
		var pub ssh.PublicKey
		if strings.HasSuffix(n, ".pub") {
			pub, _, _, _, err = ssh.ParseAuthorizedKey(data)
		} else if strings.HasSuffix(n, "_key") {
			var signer ssh.Signer
			if signer, err = ssh.ParsePrivateKey(data); err == nil {
				pub = signer.PublicKey()
			}
		} else {
			continue
		}
		if err == nil {
			keys[string(pub.Marshal())] = p
		}
	}
	return keys, nil
}

// readFactoryKeys adds the public keys of files (authorized_keys format)
// to keys.
func readFactoryKeys(keys map[string]string, files []string) error {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		n := 0
		for len(strings.TrimSpace(string(data))) > 0 {
			pub, _, _, rest, err := ssh.ParseAuthorizedKey(data)
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			keys[string(pub.Marshal())] = f
			data, n = rest, n+1
		}
		if n == 0 {
			return fmt.Errorf("%s holds no SSH public key", f)
		}
	}
	return nil
}

func exists(root *inroot.Root, paths ...string) bool {
	for _, p := range paths {
		if ok, _ := root.Exists(p); ok {
			return true
		}
	}
	return false
}
