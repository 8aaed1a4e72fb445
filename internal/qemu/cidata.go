package qemu

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"golang.org/x/crypto/ssh"
)

// Key is a fresh SSH key pair for one build.
type Key struct {
	Private       []byte // OpenSSH PEM
	AuthorizedKey string // "ssh-ed25519 AAAA... comment", no newline
}

// NewKey makes an ed25519 key pair; comment ends the public key line (it
// is how the build's key is told apart from others in authorized_keys).
func NewKey(comment string) (Key, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return Key{}, err
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return Key{}, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub)))
	if comment != "" {
		line += " " + comment
	}
	return Key{Private: pem.EncodeToMemory(block), AuthorizedKey: line}, nil
}

// Seed is the content of a cloud-init NoCloud seed.
type Seed struct {
	UserData      string
	MetaData      string
	NetworkConfig string // optional
}

// SeedLabel is the volume label cloud-init's NoCloud datasource looks for.
const SeedLabel = "cidata"

// DefaultUserData lets user log in as root (or another user) with key and
// changes what it can avoid changing: no password, root not refused, no
// default user made, hostname, apt sources, locale and sshd_config left
// alone. ssh_pwauth is left unset (cloud-init's "unchanged", cc_set_passwords
// docs): set to false, cloud-init 22.4 edits sshd_config and restarts sshd
// in its config stage, after SSH first answers, so a provisioner could
// find ssh.service "activating" and the edit would stay in the image.
func DefaultUserData(user, authorizedKey string) string {
	return UserData(user, authorizedKey, true)
}

// UserData is DefaultUserData, but with preserveHostname false the
// hostname is cloud-init's to set from the meta-data's local-hostname, as
// on a cloud's first boot. Locale and apt sources are left alone either
// way: they are the deployment's user-data, not the image's (cloud-init's
// default locale en_US.UTF-8 fails cloud-config.service on an image
// without it).
func UserData(user, authorizedKey string, preserveHostname bool) string {
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	if user == "" || user == "root" {
		// cloud-init's default would prefix root's key with a command
		// that refuses the login, and make a "debian" user instead.
		b.WriteString("disable_root: false\nusers: []\n")
		fmt.Fprintf(&b, "ssh_authorized_keys:\n  - %q\n", authorizedKey)
	} else {
		// No shell: the image's useradd default, which exists (Alpine
		// has no /bin/bash, and sshd refuses a user whose shell is
		// missing).
		fmt.Fprintf(&b, "users:\n  - name: %q\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    lock_passwd: true\n    ssh_authorized_keys:\n      - %q\n", user, authorizedKey)
	}
	// Leave the image as it was: its hostname, apt sources and locale.
	if preserveHostname {
		b.WriteString("preserve_hostname: true\n")
	}
	b.WriteString("locale: false\napt:\n  preserve_sources_list: true\n")
	return b.String()
}

// DefaultMetaData names the instance (a new id per build makes cloud-init
// run its per-instance modules) and its hostname.
func DefaultMetaData(instanceID, hostname string) string {
	return fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", instanceID, hostname)
}

// WriteSeed writes the NoCloud seed as an ISO9660 image labelled cidata at
// path, with Rock Ridge names (user-data, meta-data, network-config).
// It is built in Go: no mkisofs or genisoimage.
func WriteSeed(path string, s Seed) (err error) {
	work, err := os.MkdirTemp(filepath.Dir(path), ".cidata-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	files := map[string]string{"user-data": s.UserData, "meta-data": s.MetaData}
	if s.NetworkConfig != "" {
		files["network-config"] = s.NetworkConfig
	}
	var size int64 = 1 << 20
	for _, c := range files {
		size += int64(len(c)) + 4096
	}
	os.Remove(path)
	b, err := file.CreateFromPath(path, size)
	if err != nil {
		return fmt.Errorf("cidata: creating %s: %w", path, err)
	}
	defer func() {
		if cerr := b.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	fsys, err := iso9660.Create(b, size, 0, 2048, work)
	if err != nil {
		return fmt.Errorf("cidata: %w", err)
	}
	for name, content := range files {
		f, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("cidata: %s: %w", name, err)
		}
		if _, err := f.Write([]byte(content)); err != nil {
			f.Close()
			return fmt.Errorf("cidata: %s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("cidata: %s: %w", name, err)
		}
	}
	if err := fsys.Finalize(iso9660.FinalizeOptions{RockRidge: true, VolumeIdentifier: SeedLabel}); err != nil {
		return fmt.Errorf("cidata: finalizing %s: %w", path, err)
	}
	return nil
}

// ReadSeed reads the files back from a seed image (for tests and checks).
func ReadSeed(path string) (label string, files map[string]string, err error) {
	b, err := file.OpenFromPath(path, true)
	if err != nil {
		return "", nil, err
	}
	defer b.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	fsys, err := iso9660.Read(b, fi.Size(), 0, 2048)
	if err != nil {
		return "", nil, fmt.Errorf("cidata: reading %s: %w", path, err)
	}
	ents, err := fsys.ReadDir(".")
	if err != nil {
		return "", nil, fmt.Errorf("cidata: listing %s: %w", path, err)
	}
	files = map[string]string{}
	for _, e := range ents {
		data, err := fsys.ReadFile(e.Name())
		if err != nil {
			return "", nil, fmt.Errorf("cidata: reading %s from %s: %w", e.Name(), path, err)
		}
		files[e.Name()] = string(data)
	}
	return strings.TrimRight(fsys.Label(), " \x00"), files, nil
}
