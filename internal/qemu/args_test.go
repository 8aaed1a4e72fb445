package qemu

import (
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
)

func TestArgs(t *testing.T) {
	// auto asks hostcap: here, a host where KVM is proven.
	defer hostcap.SetProber(func(time.Duration) hostcap.Verdict {
		return hostcap.Verdict{Usable: true, Reason: "faked"}
	})()
	base := Options{Disk: "/out/disk.raw", SSHPort: 2222, QMPSocket: "/run/q.sock", ConsoleLog: "/out/console.log", Accelerator: hostcap.AccelTCG}
	with := func(f func(*Options)) Options { o := base; f(&o); return o }
	for _, tc := range []struct {
		name    string
		o       Options
		want    []string // each a run of consecutive arguments that must appear
		notWant []string
		err     string
	}{
		{"tcg defaults", base, []string{
			"-machine q35,accel=tcg", "-cpu max", "-smp 1 -m 1024",
			"-drive file=/out/disk.raw,if=none,id=disk0,format=raw,discard=unmap,detect-zeroes=unmap",
			"-device virtio-blk-pci,drive=disk0,bootindex=1",
			"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22", "-device virtio-net-pci,netdev=net0,addr=0x3",
			"-serial file:/out/console.log", "-qmp unix:/run/q.sock,server=on,wait=off", "-display none",
		}, []string{"-kernel", "pflash", "seed0"}, ""},
		{"kvm", with(func(o *Options) { o.Accelerator = hostcap.AccelKVM; o.CPUs = 2; o.MemoryMiB = 2048 }),
			[]string{"-machine q35,accel=kvm", "-cpu host", "-smp 2 -m 2048"}, nil, ""},
		{"cpu model given", with(func(o *Options) { o.CPUModel = "Nehalem" }),
			[]string{"-machine q35,accel=tcg", "-cpu Nehalem"}, []string{"-cpu max"}, ""},
		{"uefi", with(func(o *Options) { o.Firmware = FirmwareUEFI; o.OVMFCode = "/c.fd"; o.OVMFVars = "/out/vars.fd" }),
			[]string{"-drive if=pflash,format=raw,unit=0,readonly=on,file=/c.fd", "-drive if=pflash,format=raw,unit=1,file=/out/vars.fd"}, nil, ""},
		{"uefi without vars", with(func(o *Options) { o.Firmware = FirmwareUEFI; o.OVMFCode = "/c.fd" }), nil, nil, "writable copy"},
		{"seed", with(func(o *Options) { o.Seed = "/out/seed.iso" }),
			[]string{"-drive file=/out/seed.iso,if=none,id=seed0,format=raw,readonly=on", "-device virtio-blk-pci,drive=seed0"}, nil, ""},
		{"direct kernel", with(func(o *Options) { o.Kernel = "/k"; o.Initrd = "/i"; o.Cmdline = "root=LABEL=x console=ttyS0" }),
			[]string{"-kernel /k", "-initrd /i", "-append root=LABEL=x console=ttyS0"}, nil, ""},
		{"initrd without kernel", with(func(o *Options) { o.Initrd = "/i" }), nil, nil, "needs a kernel"},
		{"comma in the disk path", with(func(o *Options) { o.Disk = "/out/a,b.raw" }),
			[]string{"-drive file=/out/a,,b.raw,if=none,id=disk0,format=raw,discard=unmap,detect-zeroes=unmap"}, nil, ""},
		{"qemuargs appended", with(func(o *Options) { o.Extra = [][]string{{"-device", "virtio-balloon"}, {"-no-hpet"}} }),
			[]string{"-device virtio-balloon -no-hpet"}, nil, ""},
		{"the build's MAC", with(func(o *Options) { o.MAC = "52:54:00:ab:cd:ef" }),
			[]string{"-device virtio-net-pci,netdev=net0,addr=0x3,mac=52:54:00:ab:cd:ef"}, nil, ""},
		{"bad MAC", with(func(o *Options) { o.MAC = "52:54:00:ab:cd" }), nil, nil, `MAC address "52:54:00:ab:cd"`},
		{"bad accelerator", with(func(o *Options) { o.Accelerator = "hvf" }), nil, nil, `accelerator "hvf"`},
		{"auto where KVM runs a guest", with(func(o *Options) { o.Accelerator = hostcap.AccelAuto }),
			[]string{"-machine q35,accel=kvm", "-cpu host"}, nil, ""},
		{"auto for another architecture", with(func(o *Options) {
			o.Accelerator = ""
			o.Arch = "aarch64"
			o.Firmware = FirmwareUEFI
			o.OVMFCode = "/c.fd"
			o.OVMFVars = "/v.fd"
		}),
			[]string{"-machine virt,accel=tcg", "-cpu max,pauth-impdef=on"}, nil, ""},
		{"aarch64 under KVM", with(func(o *Options) {
			o.Accelerator = hostcap.AccelKVM
			o.Arch = "aarch64"
			o.Firmware = FirmwareUEFI
			o.OVMFCode = "/c.fd"
			o.OVMFVars = "/v.fd"
		}),
			[]string{"-machine virt,accel=kvm", "-cpu host"}, nil, ""},
		{"aarch64 has no BIOS", with(func(o *Options) { o.Arch = "aarch64" }), nil, nil, "aarch64 has no BIOS firmware; use uefi"},
		{"a user's net0 forwards more", with(func(o *Options) {
			o.Extra = [][]string{{"-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80"}, {"-no-hpet"}}
		}),
			[]string{"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-:22", "-device virtio-net-pci,netdev=net0,addr=0x3", "-no-hpet"},
			[]string{"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22 "}, ""},
		{"a second net0", with(func(o *Options) {
			o.Extra = [][]string{{"-netdev", "user,id=net0"}, {"-netdev", "user,id=net0,restrict=on"}}
		}), nil, nil, "two -netdev of id net0"},
		{"net0 not user-mode", with(func(o *Options) { o.Extra = [][]string{{"-netdev", "tap,id=net0"}} }), nil, nil,
			"net0 must be user-mode networking"},
		{"another netdev is the user's", with(func(o *Options) { o.Extra = [][]string{{"-netdev", "user,id=net1"}} }),
			[]string{"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22", "-netdev user,id=net1"}, nil, ""},
		{"bad firmware", with(func(o *Options) { o.Firmware = "coreboot" }), nil, nil, `firmware "coreboot"`},
		{"no port", with(func(o *Options) { o.SSHPort = 0 }), nil, nil, "SSH port"},
		{"no disk", Options{SSHPort: 1}, nil, nil, "no disk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, err := Args(tc.o)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Args = %v, want error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			line := " " + strings.Join(args, " ") + " "
			for _, w := range tc.want {
				if !strings.Contains(line, " "+w+" ") {
					t.Errorf("args lack %q:\n%s", w, line)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(line, w) {
					t.Errorf("args contain %q:\n%s", w, line)
				}
			}
		})
	}
}
