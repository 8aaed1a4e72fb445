package hostcap

import (
	"encoding/binary"
	"strings"
)

// The test guest. It starts in real mode at guestEntry, as a kernel's
// setup code does, and goes where a Linux kernel goes next: a GDT,
// protected mode, PAE, page tables in CR3, EFER.LME, paging, a far jump
// into a 64-bit code segment. In long mode it runs guestLoops Mi
// iterations of a two-instruction loop (a fraction of a second on
// hardware; minutes where KVM emulates each instruction, as on a host
// whose Linux kernel crawls through its decompressor), then writes a
// marker made of both halves of a 64-bit register (the upper four bytes
// exist only in long mode) and halts. It writes R, P and L as it enters
// each mode, and a dot per Mi iterations, so a failure says how far it
// got and how fast it ran.
//
// guestCode is guestAsm assembled by GNU as (64-bit ELF, then objcopy -O
// binary); beside each line its offset and source. TestGuestCode
// re-assembles it where binutils are installed.
const guestAsm = `
	.set BASE, 0x1000		# guestEntry
	.set PML4, 0x2000		# guestPML4
	.set SERIAL, 0x3f8		# serialPort
	.set LOOPS, 256			# guestLoops
	.text
	.code16
start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	movw $SERIAL, %dx
	movb $'R', %al
	outb %al, %dx
	lgdtl gdtr - start + BASE
	movl %cr0, %eax
	orl $1, %eax			# CR0.PE
	movl %eax, %cr0
	ljmpl $0x08, $(pm32 - start + BASE)
	.code32
pm32:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movb $'P', %al
	outb %al, %dx
	movl %cr4, %eax
	orl $0x20, %eax			# CR4.PAE
	movl %eax, %cr4
	movl $PML4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		# EFER
	rdmsr
	orl $0x100, %eax		# EFER.LME
	wrmsr
	movl %cr0, %eax
	orl $0x80000000, %eax		# CR0.PG
	movl %eax, %cr0
	ljmpl $0x18, $(lm64 - start + BASE)
	.code64
lm64:
	movw $SERIAL, %dx		# rdmsr set EDX
	movb $'L', %al
	outb %al, %dx
	movl $LOOPS, %ebx
1:	movl $(1 << 20), %ecx
2:	decq %rcx
	jnz 2b
	movb $'.', %al
	outb %al, %dx
	decl %ebx
	jnz 1b
	movabsq $0x0a4b4f2034364d4c, %rax	# "LM64 OK\n", little-endian
	movl $8, %ecx
3:	outb %al, %dx
	shrq $8, %rax
	loop 3b
	hlt
	.p2align 3
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff	# 0x08: code, 32-bit, flat
	.quad 0x00cf92000000ffff	# 0x10: data, flat
	.quad 0x00af9a000000ffff	# 0x18: code, 64-bit (L)
gdtr:
	.word gdtr - gdt - 1
	.long gdt - start + BASE
`

var guestCode = []byte{
	0xfa,       // 0000 start: cli
	0x31, 0xc0, // 0001 xorw %ax, %ax
	0x8e, 0xd8, // 0003 movw %ax, %ds
	0xba, 0xf8, 0x03, // 0005 movw $SERIAL, %dx
	0xb0, 0x52, // 0008 movb $'R', %al
	0xee,                               // 000a outb %al, %dx
	0x66, 0x0f, 0x01, 0x16, 0xb8, 0x10, // 000b lgdtl gdtr - start + BASE
	0x0f, 0x20, 0xc0, // 0011 movl %cr0, %eax
	0x66, 0x83, 0xc8, 0x01, // 0014 orl $1, %eax
	0x0f, 0x22, 0xc0, // 0018 movl %eax, %cr0
	0x66, 0xea, 0x23, 0x10, 0x00, 0x00, 0x08, 0x00, // 001b ljmpl $0x08, $(pm32 - start + BASE)
	0x66, 0xb8, 0x10, 0x00, // 0023 pm32: movw $0x10, %ax
	0x8e, 0xd8, // 0027 movw %ax, %ds
	0x8e, 0xc0, // 0029 movw %ax, %es
	0x8e, 0xd0, // 002b movw %ax, %ss
	0xb0, 0x50, // 002d movb $'P', %al
	0xee,             // 002f outb %al, %dx
	0x0f, 0x20, 0xe0, // 0030 movl %cr4, %eax
	0x83, 0xc8, 0x20, // 0033 orl $0x20, %eax
	0x0f, 0x22, 0xe0, // 0036 movl %eax, %cr4
	0xb8, 0x00, 0x20, 0x00, 0x00, // 0039 movl $PML4, %eax
	0x0f, 0x22, 0xd8, // 003e movl %eax, %cr3
	0xb9, 0x80, 0x00, 0x00, 0xc0, // 0041 movl $0xc0000080, %ecx
	0x0f, 0x32, // 0046 rdmsr
	0x0d, 0x00, 0x01, 0x00, 0x00, // 0048 orl $0x100, %eax
	0x0f, 0x30, // 004d wrmsr
	0x0f, 0x20, 0xc0, // 004f movl %cr0, %eax
	0x0d, 0x00, 0x00, 0x00, 0x80, // 0052 orl $0x80000000, %eax
	0x0f, 0x22, 0xc0, // 0057 movl %eax, %cr0
	0xea, 0x61, 0x10, 0x00, 0x00, 0x18, 0x00, // 005a ljmpl $0x18, $(lm64 - start + BASE)
	0x66, 0xba, 0xf8, 0x03, // 0061 lm64: movw $SERIAL, %dx
	0xb0, 0x4c, // 0065 movb $'L', %al
	0xee,                         // 0067 outb %al, %dx
	0xbb, 0x00, 0x01, 0x00, 0x00, // 0068 movl $LOOPS, %ebx
	0xb9, 0x00, 0x00, 0x10, 0x00, // 006d 1: movl $(1 << 20), %ecx
	0x48, 0xff, 0xc9, // 0072 2: decq %rcx
	0x75, 0xfb, // 0075 jnz 2b
	0xb0, 0x2e, // 0077 movb $'.', %al
	0xee,       // 0079 outb %al, %dx
	0xff, 0xcb, // 007a decl %ebx
	0x75, 0xef, // 007c jnz 1b
	0x48, 0xb8, 0x4c, 0x4d, 0x36, 0x34, 0x20, 0x4f, 0x4b, 0x0a, // 007e movabsq $0x0a4b4f2034364d4c, %rax
	0xb9, 0x08, 0x00, 0x00, 0x00, // 0088 movl $8, %ecx
	0xee,                   // 008d 3: outb %al, %dx
	0x48, 0xc1, 0xe8, 0x08, // 008e shrq $8, %rax
	0xe2, 0xf9, // 0092 loop 3b
	0xf4,             // 0094 hlt
	0x0f, 0x1f, 0x00, // 0095 .p2align 3
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0098 gdt: .quad 0
	0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00, // 00a0 .quad 0x00cf9a000000ffff
	0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00, // 00a8 .quad 0x00cf92000000ffff
	0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00, // 00b0 .quad 0x00af9a000000ffff
	0x1f, 0x00, // 00b8 gdtr: .word gdtr - gdt - 1
	0x98, 0x10, 0x00, 0x00, // 00ba .long gdt - start + BASE
}

// guestLoops is the Mi loop iterations the guest runs in long mode.
const guestLoops = 256

// guestOutput is what the guest writes to its serial port when it works.
var guestOutput = "RPL" + strings.Repeat(".", guestLoops) + "LM64 OK\n"

// The guest's memory map: 2 MiB at guest-physical 0, the code at
// guestEntry, identity page tables mapping the 2 MiB with one large page.
const (
	guestMemSize = 2 << 20
	guestEntry   = 0x1000
	guestPML4    = 0x2000
	guestPDPT    = 0x3000
	guestPD      = 0x4000
	serialPort   = 0x3f8 // COM1
)

// loadGuest writes code at guestEntry and the page tables into mem.
func loadGuest(mem, code []byte) {
	copy(mem[guestEntry:], code)
	const present, writable, large = 1 << 0, 1 << 1, 1 << 7
	binary.LittleEndian.PutUint64(mem[guestPML4:], guestPDPT|present|writable)
	binary.LittleEndian.PutUint64(mem[guestPDPT:], guestPD|present|writable)
	binary.LittleEndian.PutUint64(mem[guestPD:], 0|present|writable|large)
}
