// Package boottest boots a disk image as a cloud would and checks it from
// outside, without ever writing it: the machine runs on a throwaway qcow2
// overlay whose backing file is the image (any format qemu-img reads),
// made in a journaled directory that is removed on every exit, and QEMU is
// journaled too, so a killed run's machine and overlay are reaped by the
// next build. Before the boot it reads the image offline (its SSH host
// keys, machine-id, architecture, whether it has cloud-init and systemd)
// and gives the SSH user a key: in the overlay only, or through a
// cloud-init NoCloud seed. It waits for what was asked (a login prompt on
// the serial console, SSH, TCP ports, HTTP answers), runs the built-in
// first-boot checks and the inline commands over SSH, and fails fast with
// the console's last lines where the console shows the boot cannot
// succeed. It knows nothing of Packer.
package boottest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// The built-in checks, by the names the post-processor's `checks` takes.
const (
	CheckHostKeys      = "host-keys"      // no SSH host key is one the image held before the boot
	CheckMachineID     = "machine-id"     // /etc/machine-id holds a fresh 32-hex ID
	CheckHostname      = "hostname"       // the hostname is none of the factory's
	CheckSystemRunning = "system-running" // systemctl is-system-running --wait says running (or degraded, if allowed)
)

// Checks lists the built-in checks in the order they run.
var Checks = []string{CheckHostKeys, CheckMachineID, CheckHostname, CheckSystemRunning}

// HTTPCheck waits for an HTTP answer from the guest.
type HTTPCheck struct {
	// URL as the guest serves it: its port (default 80, or 443 for https)
	// is the guest's, reached through a forwarded port on 127.0.0.1; its
	// host is sent as the Host header only.
	URL          string
	Status       int    // expected status; 0 means 200
	BodyContains string // a substring the body must hold, or ""
}

// Options describe one boot test.
type Options struct {
	Disk       string           // the image; never written
	ConsoleLog string           // the serial console is kept here
	Journal    *cleanup.Journal // every process and file is journaled first
	StateDir   string           // where the run's directory goes (short: a unix socket lives there)

	Machine qemu.TargetChoice // QEMU binary, firmware, accelerator; "" follows the image
	CPU     string            // -cpu; "" follows the image
	CPUs    int
	Memory  int        // MiB
	Extra   [][]string // qemuargs, appended as given

	BootTimeout   time.Duration // from power-on until every wait is met
	StallTimeout  time.Duration // no console output and no disk I/O this long: hung
	SettleTimeout time.Duration // how long waits go on once systemd says the boot finished

	LoginPrompt   bool        // wait for a login prompt on the serial console
	SSH           bool        // wait for SSH with a key of this run (needed by checks and Inline)
	SSHUser       string      // default root
	TCPPorts      []int       // guest ports that must accept a connection
	HTTP          []HTTPCheck // answers to wait for
	ForwardPorts  []int       // more guest ports forwarded to free ports on 127.0.0.1
	Inline        []string    // commands run over SSH after the checks; each must exit 0
	Checks        []string    // built-in checks to run (need SSH)
	AllowDegraded bool        // system-running accepts degraded (the failed units are listed)
	// FactoryHostnames are hostnames the guest must not have (besides
	// this host's own, always included).
	FactoryHostnames []string
	// FactoryKeys are host files of SSH public keys (authorized_keys
	// format) the guest must not offer either: the factory's, recorded
	// by the build before a scrub took them out of the image.
	FactoryKeys []string

	Log func(string) // progress, one line at a time
}

// Result is what a passed boot test saw.
type Result struct {
	Accelerator string
	Booted      time.Duration            // power-on to every wait met
	Ports       map[int]int              // guest port -> host port on 127.0.0.1
	Checks      map[string]string        // check -> what it found
	Waits       map[string]time.Duration // wait -> when it was met, from power-on
}

// Failure is a failed boot test: which wait or check, what was seen, and
// the serial console's last lines.
type Failure struct {
	What    string // "HTTP http://localhost/ (guest port 80)", "check host-keys", "boot"...
	Detail  string
	Console string // the console log
	Tail    string // its last lines
}

func (f *Failure) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", f.What, f.Detail)
	if f.Tail != "" {
		fmt.Fprintf(&b, "\nLast lines of the serial console (%s):\n%s", f.Console, f.Tail)
	} else if f.Console != "" {
		fmt.Fprintf(&b, "\nThe serial console (%s) is empty.", f.Console)
	}
	return b.String()
}

// TailLines is how much of the console a failure shows.
const TailLines = 30

// Run boots o.Disk on an overlay, waits, checks and runs the inline
// commands; it returns a *Failure when the image fails the test, another
// error when the test could not run. Nothing is left when it returns: no
// QEMU, no overlay, no loop device or mount; the console log stays.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	if o.Log == nil {
		o.Log = func(string) {}
	}
	if o.SSHUser == "" {
		o.SSHUser = "root"
	}
	format, err := diskimage.Detect(o.Disk)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Disk, err)
	}
	id := strings.ToLower(rand.Text()[:10])
	// Short and on tmpfs by default: a unix socket path must fit in 108
	// bytes. Journaled first: the reaper removes it after a kill.
	dir := filepath.Join(o.StateDir, "boottest", id)
	h, err := o.Journal.Take(cleanup.FileEntry(dir))
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, o.Journal.Release(h)) }()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	overlay := filepath.Join(dir, "overlay.qcow2")
	if err := diskimage.CreateOverlay(ctx, o.Disk, format, overlay); err != nil {
		return nil, err
	}

	var key qemu.Key
	if o.SSH {
		if key, err = qemu.NewKey("imagefactory-boottest-" + id); err != nil {
			return nil, err
		}
	}
	img, err := readImage(ctx, o, overlay, dir, key)
	if err != nil {
		return nil, err
	}
	if err := readFactoryKeys(img.hostKeys, o.FactoryKeys); err != nil {
		return nil, err
	}
	t := &run{o: o, id: id, dir: dir, overlay: overlay, key: key, img: img}
	return t.boot(ctx)
}
