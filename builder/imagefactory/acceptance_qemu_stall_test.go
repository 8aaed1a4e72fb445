package imagefactory_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootdisk"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/bootloader"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/rootfs"
)

// TestAccQemuStall boots disks whose GRUB runs a script instead of a
// kernel, under the qemu strategy with boot_stall_timeout = "20s":
//   - GRUB prints a marker and sleeps: no console output, no disk I/O. The
//     build fails on the stall, well before ssh_timeout (10m), with the
//     marker in its error;
//   - GRUB prints a marker and reboots: QEMU (-no-reboot) exits, and the
//     build fails at once with the marker in its error;
//   - QEMU cannot start the machine (qemuargs naming a missing kernel): the
//     build fails at once with QEMU's own message.
//
// Each leaves no QEMU, loop device, mount, journal or output directory.
func TestAccQemuStall(t *testing.T) {
	requireQemu(t)
	const stall = 20 * time.Second
	for _, tc := range []struct {
		name   string
		grub   string // grub.cfg after the serial terminal
		source string
		want   []string
		stall  bool // the failure waits for the stall timeout
	}{
		{
			name: "grub-hangs", grub: "echo IMAGEFACTORY-STALL-MARKER\nsleep 3600\n",
			want: []string{
				"waiting for SSH: the guest made no progress: nothing on the serial console and no disk I/O for 20s (boot_stall_timeout)",
				"Last lines of the serial console (out/console.log):\nIMAGEFACTORY-STALL-MARKER",
			},
			stall: true,
		},
		{
			name: "guest-reboots", grub: "echo IMAGEFACTORY-REBOOT-MARKER\nreboot\n",
			want: []string{"waiting for SSH: QEMU exited: exit status 0 while the guest was booting", "IMAGEFACTORY-REBOOT-MARKER"},
		},
		{
			name: "qemu-refuses", grub: "sleep 3600\n", source: `qemuargs = [["-kernel", "/nonexistent"]]`,
			want: []string{"'/nonexistent': No such file or directory"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAcc(t)
			disk := grubScriptDisk(t, tc.grub)
			run := a.Start(t, template(`
  strategy           = "qemu"
  accelerator        = "tcg"
  memory             = 256
  boot_stall_timeout = "20s"
`+tc.source, ""), map[string]string{"base": disk})
			done := make(chan fixture.Result, 1)
			go func() { done <- run.Wait() }()
			var res fixture.Result
			select {
			case res = <-done:
			case <-time.After(stall + time.Minute): // only stops a hung test
				run.Interrupt(t, syscall.SIGINT)
				res = <-done
				t.Fatalf("the build still ran %s after it started:\n%s", stall+time.Minute, res.Output)
			}
			t.Logf("failed after %s (boot_stall_timeout %s, ssh_timeout 10m)", res.Duration.Round(100*time.Millisecond), stall)
			if res.ExitCode == 0 {
				t.Fatalf("the build succeeded:\n%s", res.Output)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Output, w) {
					t.Errorf("the output lacks %q:\n%s", w, res.Output)
				}
			}
			if strings.Contains(res.Output, "Timeout waiting for SSH") {
				t.Errorf("the build waited out ssh_timeout:\n%s", res.Output)
			}
			if tc.stall && !strings.Contains(res.Output, "Booting the image under QEMU") {
				t.Errorf("the guest was not booted:\n%s", res.Output)
			}
			// The console's last lines are shown only in the error: when
			// the step halts and in Packer's two summaries, not again by
			// the launch step's cleanup.
			if n := strings.Count(res.Output, "Last lines of the serial console"); n > 3 {
				t.Errorf("the console's lines are shown %d times:\n%s", n, res.Output)
			}
			if _, err := os.Stat(a.out()); !os.IsNotExist(err) {
				t.Errorf("output directory left after a failed build")
			}
			assertNoQemuLeaks(t, a)
		})
	}
}

// grubScriptDisk makes a GPT disk (BIOS and UEFI GRUB, through
// internal/bootdisk) with a busybox root whose grub.cfg turns the serial
// terminal on and then runs script instead of booting a kernel. GRUB's
// i386-pc modules are in /boot/grub/i386-pc, as grub-install puts them,
// so commands such as sleep and reboot load on demand.
func grubScriptDisk(t *testing.T, script string) string {
	t.Helper()
	const modules = bootloader.DefaultBIOSDir
	if _, err := os.Stat(filepath.Join(modules, "command.lst")); err != nil {
		t.Skipf("needs GRUB's i386-pc modules (grub-pc-bin): %v", err)
	}
	tree := t.TempDir()
	fixture.BusyboxTree(t, tree)
	grub := filepath.Join(tree, "boot/grub")
	if err := os.MkdirAll(filepath.Join(grub, "i386-pc"), 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(modules)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if ext := filepath.Ext(e.Name()); ext == ".mod" || ext == ".lst" {
			b, err := os.ReadFile(filepath.Join(modules, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(grub, "i386-pc", e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n" + script
	if err := os.WriteFile(filepath.Join(grub, "grub.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "grub-script.raw")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := bootdisk.Make(ctx, bootdisk.Options{Disk: disk, Tree: tree, Table: partition.GPT, FSType: rootfs.Ext4, Free: 16 << 20}); err != nil {
		t.Fatalf("making the GRUB disk: %v", err)
	}
	return disk
}
