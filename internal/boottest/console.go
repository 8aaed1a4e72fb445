package boottest

import (
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// fatal are console lines after which the boot cannot succeed, and what
// each means. Sources: SeaBIOS's src/boot.c ("No bootable device.",
// "Boot failed: not a bootable disk"), OVMF's BdsDxe, GRUB's
// grub-core/loader/i386/linux.c and normal/menu.c ("you need to load the
// kernel first"), kernel/panic.c, initramfs-tools' init ("Gave up waiting
// for root file system device") and systemd's emergency.service.
var fatal = []struct {
	re  *regexp.Regexp
	why string
}{
	{regexp.MustCompile(`No bootable device`), "the firmware found no bootable disk"},
	{regexp.MustCompile(`Boot failed: not a bootable disk`), "the firmware found no boot loader on the disk"},
	{regexp.MustCompile(`No bootable option or device was found`), "the UEFI firmware found no boot option"},
	{regexp.MustCompile("error: file `?[^ ]*vmlinu[xz][^ ]*'? not found"), "the boot loader found no kernel"},
	{regexp.MustCompile(`you need to load the kernel first`), "the boot loader has no kernel to boot"},
	{regexp.MustCompile(`grub rescue>`), "GRUB fell to its rescue shell: it cannot read its modules or configuration"},
	{regexp.MustCompile(`Kernel panic - not syncing`), "the kernel panicked"},
	{regexp.MustCompile(`Gave up waiting for root file system device`), "the initramfs did not find the root filesystem"},
	{regexp.MustCompile(`You are in emergency mode`), "systemd entered emergency mode"},
}

// loginPrompt is getty's prompt ("debian login: "), at the end of a line.
var loginPrompt = regexp.MustCompile(`(?m)\blogin: *$`)

// consoleScanner reads what the serial console file gained since the last
// scan, line by line.
type consoleScanner struct {
	path    string
	off     int64
	partial string   // the last line, not ended yet
	seen    []string // the lines the last scan read (the partial one last)
	last    string   // the last line that is not blank, so far
}

func newConsoleScanner(path string) *consoleScanner { return &consoleScanner{path: path} }

// scan reports whether a login prompt showed and the first fatal line
// (with what it means), "" when none.
func (s *consoleScanner) scan() (prompt bool, fatalLine string) {
	f, err := os.Open(s.path)
	if err != nil {
		return false, ""
	}
	defer f.Close()
	if _, err := f.Seek(s.off, io.SeekStart); err != nil {
		return false, ""
	}
	b, err := io.ReadAll(io.LimitReader(f, 4<<20))
	s.seen = nil
	if err != nil || len(b) == 0 {
		return false, ""
	}
	s.off += int64(len(b))
	text := s.partial + strings.ReplaceAll(qemu.CleanConsole(b), "\r", "")
	lines := strings.Split(text, "\n")
	s.partial = lines[len(lines)-1]
	s.seen = lines
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			s.last = l
		}
	}
	for _, l := range lines {
		for _, f := range fatal {
			if f.re.MatchString(l) {
				return prompt, f.why + ": " + strings.TrimSpace(l)
			}
		}
		if loginPrompt.MatchString(l) {
			prompt = true
		}
	}
	return prompt, ""
}
