// Command hostcap prints what internal/hostcap decides about this host,
// for scripts (bench/) that boot QEMU themselves and
// must make the builder's choice:
//
//	hostcap accelerator [auto|kvm|tcg]
//	    kvm or tcg on stdout, the one-line reason on stderr; exit 0.
//	    The request defaults to auto; kvm where KVM cannot run a guest is
//	    refused (exit 1, the reason on stderr).
//	hostcap kvm
//	    the KVM probe's verdict: usable, unusable or unproven, its time and
//	    reason on stdout; exit 0.
//
// Exit 2 for usage errors. The KVM probe takes up to 5 s where KVM does
// not work.
package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = "usage: hostcap accelerator [auto|kvm|tcg] | hostcap kvm"

func run(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) >= 1 && len(args) <= 2 && args[0] == "accelerator":
		requested := hostcap.AccelAuto
		if len(args) == 2 {
			requested = args[1]
		}
		accel, reason, err := hostcap.Accelerator(requested, "")
		if err != nil {
			fmt.Fprintln(stderr, "hostcap:", err)
			return 1
		}
		fmt.Fprintln(stdout, accel)
		fmt.Fprintf(stderr, "accelerator %s: %s\n", accel, reason)
		return 0
	case len(args) == 1 && args[0] == "kvm":
		v := hostcap.KVM()
		state := "unusable"
		switch {
		case v.Usable:
			state = "usable"
		case v.Unproven:
			state = "unproven"
		}
		fmt.Fprintf(stdout, "kvm %s (probed in %s): %s\n", state, v.Took.Round(time.Millisecond), v.Reason)
		return 0
	}
	fmt.Fprintln(stderr, usage)
	return 2
}
