//go:build linux && amd64

package hostcap

import (
	"fmt"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KVM ioctl numbers (linux/kvm.h: _IO/_IOR/_IOW/_IOWR of 0xAE with the
// size of the argument's struct; kvm_ioctls_test.go recomputes them).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmGetSupportedCPUID   = 0xC008AE05 // _IOWR(0xAE, 0x05, struct kvm_cpuid2)
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46 // _IOW(0xAE, 0x46, struct kvm_userspace_memory_region)
	kvmSetTSSAddr          = 0xAE47
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81 // _IOR(0xAE, 0x81, struct kvm_regs)
	kvmSetRegs             = 0x4090AE82 // _IOW(0xAE, 0x82, struct kvm_regs)
	kvmGetSregs            = 0x8138AE83 // _IOR(0xAE, 0x83, struct kvm_sregs)
	kvmSetSregs            = 0x4138AE84 // _IOW(0xAE, 0x84, struct kvm_sregs)
	kvmSetCPUID2           = 0x4008AE90 // _IOW(0xAE, 0x90, struct kvm_cpuid2)

	kvmAPIVersion = 12 // the only one since Linux 2.6.22
)

// The structs of linux/kvm.h (x86) the probe passes, laid out as the
// kernel does.
type kvmUserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

type kvmCPUIDEntry2 struct {
	Function, Index, Flags uint32
	EAX, EBX, ECX, EDX     uint32
	_                      [3]uint32
}

// kvmCPUID2 is struct kvm_cpuid2 with room for 256 entries (KVM's own
// limit is KVM_MAX_CPUID_ENTRIES, 256).
type kvmCPUID2 struct {
	Nent    uint32
	_       uint32
	Entries [256]kvmCPUIDEntry2
}

type kvmRegs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

type kvmSegment struct {
	Base                           uint64
	Limit                          uint32
	Selector                       uint16
	Type                           uint8
	Present, DPL, DB, S, L, G, AVL uint8
	Unusable                       uint8
	_                              uint8
}

type kvmDtable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

type kvmSregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT     kvmSegment
	GDT, IDT                            kvmDtable
	CR0, CR2, CR3, CR4, CR8, EFER, APIC uint64
	InterruptBitmap                     [4]uint64
}

// Offsets in struct kvm_run (the vCPU's shared page).
const (
	runImmediateExit = 1  // __u8 immediate_exit
	runExitReason    = 8  // __u32 exit_reason
	runUnion         = 32 // the exit's details: io, fail_entry, internal...
)

// vmRun is one test guest under /dev/kvm, set up and ready to run: the
// vcpu the probe drives.
type vmRun struct {
	fds  []int  // vCPU, VM, /dev/kvm: closed in this order
	mem  []byte // guest memory at guest-physical 0
	run  []byte // the vCPU's kvm_run page
	vcpu int
	tid  int // the OS thread that runs it

	mu     sync.Mutex // interrupt against close
	closed bool
}

// ProbeKVM runs the test guest (guest.go) under /dev/kvm and says whether
// it reached long mode and ran at hardware speed within deadline. The
// caller is held at most about a second past deadline, even if KVM_RUN
// never returns (its thread is then abandoned). Errors of /dev/kvm and of
// its ioctls are verdicts too.
func ProbeKVM(deadline time.Duration) Verdict {
	return probeKVM("/dev/kvm", guestCode, deadline)
}

// probeKVM runs code as the test guest under the KVM device dev.
func probeKVM(dev string, code []byte, deadline time.Duration) Verdict {
	return probe(func() (vcpu, Verdict) {
		vm, v := newVM(dev, code)
		if vm == nil {
			return nil, v // not a nil *vmRun in a non-nil vcpu
		}
		return vm, v
	}, deadline)
}

// newVM opens dev (/dev/kvm) and makes a VM with 2 MiB of memory holding the
// test guest and its page tables, and one vCPU in real mode at the
// guest's first instruction. On failure the verdict names the step.
func newVM(dev string, code []byte) (vm *vmRun, v Verdict) {
	vm = &vmRun{tid: unix.Gettid()}
	defer func() {
		if v.Reason != "" {
			vm.close()
			vm = nil
		}
	}()
	kvm, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return vm, openFailed(err)
	}
	vm.fds = append(vm.fds, kvm)
	if n, err := unix.IoctlRetInt(kvm, kvmGetAPIVersion); err != nil {
		return vm, ioctlFailed("KVM_GET_API_VERSION", err)
	} else if n != kvmAPIVersion {
		return vm, Verdict{Reason: fmt.Sprintf("/dev/kvm speaks KVM API version %d, not %d", n, kvmAPIVersion)}
	}
	vmfd, err := unix.IoctlRetInt(kvm, kvmCreateVM)
	if err != nil {
		return vm, ioctlFailed("KVM_CREATE_VM", err)
	}
	vm.fds = append([]int{vmfd}, vm.fds...)
	// Intel's VMX needs three pages for real mode's TSS; QEMU's address.
	if err := ioctlArg(vmfd, kvmSetTSSAddr, 0xfffbd000); err != nil {
		return vm, ioctlFailed("KVM_SET_TSS_ADDR", err)
	}

	vm.mem, err = unix.Mmap(-1, 0, guestMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return vm, Verdict{Reason: fmt.Sprintf("guest memory: mmap: %v", err), Err: err}
	}
	loadGuest(vm.mem, code)
	region := kvmUserspaceMemoryRegion{MemorySize: guestMemSize, UserspaceAddr: uint64(uintptr(unsafe.Pointer(&vm.mem[0])))}
	if err := ioctlPtr(vmfd, kvmSetUserMemoryRegion, unsafe.Pointer(&region)); err != nil {
		return vm, ioctlFailed("KVM_SET_USER_MEMORY_REGION", err)
	}

	vm.vcpu, err = unix.IoctlRetInt(vmfd, kvmCreateVCPU)
	if err != nil {
		return vm, ioctlFailed("KVM_CREATE_VCPU", err)
	}
	vm.fds = append([]int{vm.vcpu}, vm.fds...)
	// Long mode is refused unless the guest's CPUID says LM: give it
	// everything KVM supports, as QEMU's -cpu host does.
	var cpuid kvmCPUID2
	cpuid.Nent = uint32(len(cpuid.Entries))
	if err := ioctlPtr(kvm, kvmGetSupportedCPUID, unsafe.Pointer(&cpuid)); err != nil {
		return vm, ioctlFailed("KVM_GET_SUPPORTED_CPUID", err)
	}
	if err := ioctlPtr(vm.vcpu, kvmSetCPUID2, unsafe.Pointer(&cpuid)); err != nil {
		return vm, ioctlFailed("KVM_SET_CPUID2", err)
	}
	size, err := unix.IoctlRetInt(kvm, kvmGetVCPUMmapSize)
	if err != nil {
		return vm, ioctlFailed("KVM_GET_VCPU_MMAP_SIZE", err)
	}
	vm.run, err = unix.Mmap(vm.vcpu, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return vm, Verdict{Reason: fmt.Sprintf("mmap of the vCPU's kvm_run: %v", err), Err: err}
	}

	// Real mode, as after a reset, but at guestEntry with CS base 0 (a
	// boot loader's setup code starts the same way).
	var sregs kvmSregs
	if err := ioctlPtr(vm.vcpu, kvmGetSregs, unsafe.Pointer(&sregs)); err != nil {
		return vm, ioctlFailed("KVM_GET_SREGS", err)
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := ioctlPtr(vm.vcpu, kvmSetSregs, unsafe.Pointer(&sregs)); err != nil {
		return vm, ioctlFailed("KVM_SET_SREGS", err)
	}
	regs := kvmRegs{RIP: guestEntry, RFLAGS: 2}
	if err := ioctlPtr(vm.vcpu, kvmSetRegs, unsafe.Pointer(&regs)); err != nil {
		return vm, ioctlFailed("KVM_SET_REGS", err)
	}
	return vm, Verdict{}
}

// enter is one KVM_RUN, and the exit it ended with.
func (vm *vmRun) enter() (guestExit, error) {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(vm.vcpu), kvmRun, 0); e != 0 {
		return guestExit{}, e
	}
	x := guestExit{reason: *(*uint32)(unsafe.Pointer(&vm.run[runExitReason]))}
	u := vm.run[runUnion:]
	switch x.reason {
	case exitIO:
		// struct { __u8 direction, size; __u16 port; __u32 count; __u64 data_offset; }
		x.out = u[0] == 1
		x.port = *(*uint16)(unsafe.Pointer(&u[2]))
		n := int(u[1]) * int(*(*uint32)(unsafe.Pointer(&u[4])))
		off := int(*(*uint64)(unsafe.Pointer(&u[8])))
		if off > 0 && off+n <= len(vm.run) {
			x.data = append([]byte(nil), vm.run[off:off+n]...)
		}
	case exitFailEntry: // __u64 hardware_entry_failure_reason
		x.detail = *(*uint64)(unsafe.Pointer(&u[0]))
	case exitInternalError: // __u32 suberror
		x.detail = uint64(*(*uint32)(unsafe.Pointer(&u[0])))
	}
	return x, nil
}

// longMode reads EFER.LMA (bit 10) from the vCPU's special registers.
func (vm *vmRun) longMode() (bool, error) {
	var sregs kvmSregs
	if err := ioctlPtr(vm.vcpu, kvmGetSregs, unsafe.Pointer(&sregs)); err != nil {
		return false, err
	}
	return sregs.EFER&(1<<10) != 0, nil
}

// interrupt makes a KVM_RUN in progress return (EINTR) and every later one
// return at once: immediate_exit, then a signal to the vCPU's thread that
// the Go runtime ignores (SIGURG, its own preemption signal).
func (vm *vmRun) interrupt() {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return
	}
	vm.run[runImmediateExit] = 1
	unix.Tgkill(unix.Getpid(), vm.tid, unix.SIGURG)
}

func (vm *vmRun) close() {
	if vm == nil {
		return
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.closed = true
	if vm.run != nil {
		unix.Munmap(vm.run)
	}
	for _, fd := range vm.fds {
		unix.Close(fd)
	}
	if vm.mem != nil {
		unix.Munmap(vm.mem)
	}
}

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func ioctlArg(fd int, req, arg uintptr) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg); e != 0 {
		return e
	}
	return nil
}
