package bootloader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"unicode"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// ConfigPath is where both GRUBs read their menu, inside the root.
const ConfigPath = "/boot/grub/grub.cfg"

// DefaultCmdline is what the kernel gets besides root= and ro: the login
// prompt and kernel messages on the first serial port as well as the screen.
const DefaultCmdline = "console=tty0 console=ttyS0,115200"

// DefaultCmdlineArm64 is DefaultCmdline for arm64: QEMU's virt machine's
// serial port is a PL011, ttyAMA0 (so is a Raspberry Pi's; a server whose
// firmware describes a 16550, such as AWS Graviton, wants ttyS0).
const DefaultCmdlineArm64 = "console=tty0 console=ttyAMA0,115200"

// Entry is the one boot entry of the menu.
type Entry struct {
	Title   string
	Kernel  string // inside the root, e.g. /boot/vmlinuz-6.1.0-28-amd64
	Initrd  string // inside the root; "" for none
	Cmdline string // appended after root=UUID=... ro
	// EFIConsole leaves GRUB on the firmware's console alone: arm64-efi
	// GRUB has no com0 (its serial terminal drives x86 ports), and the
	// firmware's console there is the serial port already (AAVMF).
	EFIConsole bool
}

// Config renders grub.cfg: serial and screen terminals, one entry, no
// waiting beyond a second.
func Config(r Root, e Entry) string {
	title := e.Title
	if title == "" {
		title = "Linux"
	}
	var b strings.Builder
	if e.EFIConsole {
		b.WriteString("# Written by imagefactory for the UEFI GRUB, on the firmware's console.\n")
		b.WriteString("set timeout=1\nset default=0\n\n")
	} else {
		b.WriteString("# Written by imagefactory. Both the BIOS and the UEFI GRUB read it.\n")
		b.WriteString("set timeout=1\nset default=0\n")
		b.WriteString("serial --unit=0 --speed=115200\n")
		b.WriteString("terminal_input console serial\nterminal_output console serial\n\n")
	}
	fmt.Fprintf(&b, "menuentry %s {\n", grubQuote(title))
	fmt.Fprintf(&b, "\tsearch --no-floppy --fs-uuid --set=root %s\n", r.UUID)
	fmt.Fprintf(&b, "\tlinux %s root=UUID=%s ro", grubQuote(e.Kernel), r.UUID)
	if c := strings.TrimSpace(e.Cmdline); c != "" {
		b.WriteString(" " + c)
	}
	b.WriteString("\n")
	if e.Initrd != "" {
		fmt.Fprintf(&b, "\tinitrd %s\n", grubQuote(e.Initrd))
	}
	b.WriteString("}\n")
	return b.String()
}

// grubQuote quotes a word for grub.cfg (single quotes, as in sh).
func grubQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("/._-+,=:", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ErrNoKernel is returned by FindKernel when /boot holds no vmlinuz-*.
var ErrNoKernel = errors.New("no kernel (/boot/vmlinuz-*) in the root tree")

// FindKernel looks in the root's /boot (confined to the root) for the
// newest vmlinuz-VERSION and its initrd.img-VERSION (initrd "" if there is
// none). Paths are inside the root.
func FindKernel(root *inroot.Root) (kernel, initrd string, err error) {
	d, err := root.Open("/boot")
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", ErrNoKernel
	}
	if err != nil {
		return "", "", err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return "", "", fmt.Errorf("reading /boot: %w", err)
	}
	var versions []string
	for _, n := range names {
		if v, ok := strings.CutPrefix(n, "vmlinuz-"); ok && v != "" {
			if fi, err := root.Stat(path.Join("/boot", n)); err == nil && fi.Mode().IsRegular() {
				versions = append(versions, v)
			}
		}
	}
	if len(versions) == 0 {
		return "", "", ErrNoKernel
	}
	sort.Slice(versions, func(i, j int) bool { return versionLess(versions[i], versions[j]) })
	v := versions[len(versions)-1]
	kernel = "/boot/vmlinuz-" + v
	if fi, err := root.Stat("/boot/initrd.img-" + v); err == nil && fi.Mode().IsRegular() {
		initrd = "/boot/initrd.img-" + v
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", "", err
	}
	return kernel, initrd, nil
}

// versionLess compares kernel versions the way people read them: runs of
// digits as numbers ("6.1.0-28" < "6.1.0-101").
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		da, ra := splitRun(a)
		db, rb := splitRun(b)
		if da != db {
			if isDigits(da) && isDigits(db) {
				na, nb := strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
				if len(na) != len(nb) {
					return len(na) < len(nb)
				}
				return na < nb
			}
			return da < db
		}
		a, b = ra, rb
	}
	return len(a) < len(b)
}

func splitRun(s string) (run, rest string) {
	digit := unicode.IsDigit(rune(s[0]))
	i := 1
	for i < len(s) && unicode.IsDigit(rune(s[i])) == digit {
		i++
	}
	return s[:i], s[i:]
}

func isDigits(s string) bool { return s != "" && unicode.IsDigit(rune(s[0])) }
