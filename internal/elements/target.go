package elements

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
)

// Target is the image being provisioned, as the caller reaches it.
type Target interface {
	// RunInside runs a /bin/sh command line in the image and returns its
	// exit status.
	RunInside(ctx context.Context, command string, stdout, stderr io.Writer) (int, error)
	// Download copies a file of the image (resolved inside it) to w.
	Download(src string, w io.Writer) error
	// Upload writes a file into the image.
	Upload(dst string, r io.Reader, mode uint32) error
	// UploadDir copies the contents of the host directory src into the
	// image directory dst.
	UploadDir(dst, src string) error
	// ShowHooks makes the host directory dir visible, read-only, at
	// /tmp/in_target.d in the image until the returned func is called;
	// it must leave nothing behind in the image.
	ShowHooks(dir string) (func() error, error)
	// RootPath is the host directory the image root is mounted on (DIB's
	// TARGET_ROOT), or "" when the image is not mounted on this host.
	RootPath() string
}

// Facts are what the base image tells about itself, in DIB's terms.
type Facts struct {
	DistroName, Release, InitSystem, Arch string
}

// Detect reads the image's /etc/os-release (DISTRO_NAME, DIB_RELEASE), the
// ELF header of its /bin/sh (ARCH, in Debian's names as DIB, through
// internal/arch) and its init
// (DIB_INIT_SYSTEM).
func Detect(ctx context.Context, t Target) (Facts, error) {
	var f Facts
	var osr bytes.Buffer
	if err := t.Download("/etc/os-release", &osr); err != nil {
		osr.Reset()
		if err2 := t.Download("/usr/lib/os-release", &osr); err2 != nil {
			return f, fmt.Errorf("reading /etc/os-release of the image: %w", err)
		}
	}
	kv := parseOSRelease(osr.String())
	f.DistroName, f.Release = distroRelease(kv)
	var sh bytes.Buffer
	if err := t.Download("/bin/sh", &sh); err != nil {
		return f, fmt.Errorf("reading /bin/sh of the image for its architecture: %w", err)
	}
	a, err := arch.OfELF(bytes.NewReader(sh.Bytes()))
	if err != nil {
		return f, fmt.Errorf("/bin/sh of the image: %w", err)
	}
	f.Arch = string(a)
	var out bytes.Buffer
	probe := `if [ -x /sbin/openrc ] || [ -x /usr/sbin/openrc ] || [ -x /sbin/openrc-run ]; then echo openrc
elif readlink -f /sbin/init 2>/dev/null | grep -q systemd || [ -x /lib/systemd/systemd ] || [ -x /usr/lib/systemd/systemd ]; then echo systemd
elif [ -x /sbin/initctl ] && /sbin/initctl version 2>/dev/null | grep -q upstart; then echo upstart
else echo sysv; fi`
	if code, err := t.RunInside(ctx, probe, &out, io.Discard); err != nil || code != 0 {
		return f, fmt.Errorf("probing the image's init system: exit %d: %v", code, err)
	}
	f.InitSystem = strings.TrimSpace(out.String())
	return f, nil
}

func parseOSRelease(s string) map[string]string {
	kv := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		kv[k] = strings.Trim(v, `"'`)
	}
	return kv
}

// distroRelease maps os-release to DIB's DISTRO_NAME and DIB_RELEASE: the
// Debian family uses codenames, the others the version.
func distroRelease(kv map[string]string) (string, string) {
	id := kv["ID"]
	switch {
	case strings.HasPrefix(id, "opensuse"):
		id = "opensuse"
	case id == "rocky", id == "almalinux":
		// DIB's rocky/almalinux elements use these names too.
	}
	switch id {
	case "debian", "ubuntu":
		if c := kv["VERSION_CODENAME"]; c != "" {
			return id, c
		}
	case "rhel", "centos", "rocky", "almalinux":
		v := kv["VERSION_ID"]
		if id == "centos" && !strings.Contains(v, "stream") && strings.Contains(strings.ToLower(kv["NAME"]), "stream") {
			v += "-stream"
		}
		if i := strings.Index(v, "."); i > 0 && id != "centos" {
			v = v[:i]
		}
		return id, v
	}
	return id, kv["VERSION_ID"]
}
