package hostcap

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// guestCode is what GNU as makes of guestAsm (where x86 binutils are
// installed: they are not required).
func TestGuestCode(t *testing.T) {
	as, err := exec.LookPath("as")
	if err != nil {
		t.Skip("needs GNU as (binutils) to re-assemble the test guest")
	}
	if out, _ := exec.Command(as, "--version").Output(); !bytes.Contains(out, []byte("x86_64")) {
		t.Skipf("as is not an x86_64 assembler: %s", firstLine(out))
	}
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Skip("needs objcopy (binutils)")
	}
	dir := t.TempDir()
	src, obj, bin := filepath.Join(dir, "guest.S"), filepath.Join(dir, "guest.o"), filepath.Join(dir, "guest.bin")
	if err := os.WriteFile(src, []byte(guestAsm), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{{as, "--64", "-o", obj, src}, {objcopy, "-O", "binary", obj, bin}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	got, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, guestCode) {
		t.Errorf("guestAsm assembles to\n% x\nguestCode is\n% x", got, guestCode)
	}
}

// bootPrelude is a boot sector's start: it reads the 32 sectors after it
// (guest memory 0x1000-0x4fff as loadGuest lays it out: the code and the
// page tables) to 0x1000 through the BIOS and jumps to the guest in real
// mode, CS 0, as the probe starts it.
var bootPrelude = []byte{
	0xfa,       // cli
	0x31, 0xc0, // xorw %ax, %ax
	0x8e, 0xd8, // movw %ax, %ds
	0x8e, 0xc0, // movw %ax, %es
	0x8e, 0xd0, // movw %ax, %ss
	0xbc, 0x00, 0x7c, // movw $0x7c00, %sp
	0xbb, 0x00, 0x10, // movw $0x1000, %bx
	0xb8, 0x20, 0x02, // movw $0x0220, %ax: read 32 sectors
	0xb9, 0x02, 0x00, // movw $0x0002, %cx: cylinder 0, sector 2
	0xb6, 0x00, // movb $0, %dh: head 0; %dl is the boot drive
	0xcd, 0x13, // int $0x13
	0xea, 0x00, 0x10, 0x00, 0x00, // ljmp $0, $0x1000
}

// The test guest, as the probe lays it out, does what it should where the
// CPU runs it: under QEMU's TCG (where KVM cannot be trusted, this is the
// proof that the guest would pass where KVM works) it writes exactly
// guestOutput. Needs qemu-system-x86_64; a minute's deadline stops a hang.
func TestGuestUnderTCG(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("needs qemu-system-x86_64")
	}
	dir := t.TempDir()
	mem := make([]byte, guestPD+4096)
	loadGuest(mem, guestCode)
	disk := make([]byte, 1<<20)
	copy(disk, bootPrelude)
	disk[510], disk[511] = 0x55, 0xaa
	copy(disk[512:], mem[guestEntry:])
	img, console := filepath.Join(dir, "guest.img"), filepath.Join(dir, "console.log")
	if err := os.WriteFile(img, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "64",
		"-nodefaults", "-display", "none", "-no-reboot", "-serial", "file:"+console,
		"-drive", "file="+img+",format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0,bootindex=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	start := time.Now()
	var out []byte
	for ctx.Err() == nil {
		out, _ = os.ReadFile(console)
		if len(out) >= len(guestOutput) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the guest wrote %d bytes under TCG in %s", len(out), time.Since(start).Round(time.Millisecond))
	if string(out) != guestOutput {
		t.Errorf("the guest wrote %q under TCG, want %q\nQEMU: %s", out, guestOutput, stderr.String())
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
