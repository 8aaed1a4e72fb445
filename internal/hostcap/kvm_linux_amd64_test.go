//go:build linux && amd64

package hostcap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// The ioctl numbers are linux/kvm.h's: _IOC(dir, 0xAE, nr, size) with the
// size of the struct the probe passes.
func TestIoctlNumbers(t *testing.T) {
	const none, write, read = 0, 1, 2
	ioc := func(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | 0xAE<<8 | nr }
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, ioc(none, 0x00, 0)},
		{"KVM_CREATE_VM", kvmCreateVM, ioc(none, 0x01, 0)},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, ioc(none, 0x04, 0)},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, ioc(read|write, 0x05, 8)},
		{"KVM_CREATE_VCPU", kvmCreateVCPU, ioc(none, 0x41, 0)},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, ioc(write, 0x46, unsafe.Sizeof(kvmUserspaceMemoryRegion{}))},
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, ioc(none, 0x47, 0)},
		{"KVM_RUN", kvmRun, ioc(none, 0x80, 0)},
		{"KVM_GET_REGS", kvmGetRegs, ioc(read, 0x81, unsafe.Sizeof(kvmRegs{}))},
		{"KVM_SET_REGS", kvmSetRegs, ioc(write, 0x82, unsafe.Sizeof(kvmRegs{}))},
		{"KVM_GET_SREGS", kvmGetSregs, ioc(read, 0x83, unsafe.Sizeof(kvmSregs{}))},
		{"KVM_SET_SREGS", kvmSetSregs, ioc(write, 0x84, unsafe.Sizeof(kvmSregs{}))},
		{"KVM_SET_CPUID2", kvmSetCPUID2, ioc(write, 0x90, 8)},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	// The sizes linux/kvm.h gives its structs.
	for _, s := range []struct {
		name      string
		got, want uintptr
	}{
		{"kvm_userspace_memory_region", unsafe.Sizeof(kvmUserspaceMemoryRegion{}), 32},
		{"kvm_regs", unsafe.Sizeof(kvmRegs{}), 144},
		{"kvm_segment", unsafe.Sizeof(kvmSegment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(kvmDtable{}), 16},
		{"kvm_sregs", unsafe.Sizeof(kvmSregs{}), 312},
		{"kvm_cpuid_entry2", unsafe.Sizeof(kvmCPUIDEntry2{}), 40},
	} {
		if s.got != s.want {
			t.Errorf("struct %s: %d bytes, want %d", s.name, s.got, s.want)
		}
	}
}

// The real probe on this host: its verdict, either way, is printed. It
// fails only if the probe points at itself (an ioctl refused its
// arguments) or holds its caller far past its deadline.
func TestProbeKVMHere(t *testing.T) {
	done := make(chan Verdict, 1)
	go func() { done <- ProbeKVM(DefaultDeadline) }()
	select {
	case v := <-done:
		t.Logf("KVM on this host: usable %v, in %s: %s", v.Usable, v.Took.Round(time.Millisecond), v.Reason)
		if v.Err != nil {
			t.Errorf("the probe failed in itself: %v", v.Err)
		}
		if v.Reason == "" || v.Unproven {
			t.Errorf("verdict %+v: no reason, or unproven on linux/amd64", v)
		}
	case <-time.After(DefaultDeadline + kickGrace + 30*time.Second):
		t.Fatal("the probe held its caller far past its deadline")
	}
}

// A real guest that never ends (jmp $ in real mode) is stopped at the
// deadline: KVM_RUN returns to the kick (immediate_exit and SIGURG) and
// the verdict says the guest did not reach long mode. Skipped where
// /dev/kvm does not open or make a VM.
func TestProbeKVMKicksAHungGuest(t *testing.T) {
	const deadline = 300 * time.Millisecond
	v := probeKVM("/dev/kvm", []byte{0xeb, 0xfe}, deadline) // jmp $
	t.Logf("%+v", v)
	if !strings.HasPrefix(v.Reason, "/dev/kvm opens") {
		t.Skipf("no test VM here: %s", v.Reason)
	}
	want := "/dev/kvm opens but a test guest did not reach long mode in 300ms (it wrote nothing, not even in real mode)"
	if v.Usable || v.Reason != want {
		t.Errorf("verdict %+v, want the reason %q", v, want)
	}
}

// No device, through the real code: the reason names /dev/kvm and what
// to check.
func TestProbeKVMNoDevice(t *testing.T) {
	v := probeKVM(filepath.Join(t.TempDir(), "kvm"), guestCode, DefaultDeadline)
	want := "no /dev/kvm (the kvm module is not loaded, or this is a VM without nested virtualization)"
	if v.Usable || v.Reason != want || v.Err != nil {
		t.Errorf("verdict %+v, want the reason %q", v, want)
	}
	// A file that is not KVM's device: its ioctls are refused, which the
	// verdict blames on the probe's arguments.
	f := filepath.Join(t.TempDir(), "not-kvm")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if v := probeKVM(f, guestCode, DefaultDeadline); v.Usable || !strings.Contains(v.Reason, "KVM_GET_API_VERSION") {
		t.Errorf("a plain file as /dev/kvm: %+v", v)
	}
}
