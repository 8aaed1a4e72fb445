//go:build !(linux && amd64)

package hostcap

import (
	"fmt"
	"runtime"
	"time"
)

// ProbeKVM is not implemented on this host: its test guest is x86 code
// run through Linux's /dev/kvm. KVM stays unproven.
func ProbeKVM(deadline time.Duration) Verdict {
	return Verdict{Unproven: true, Reason: fmt.Sprintf("KVM is unproven: the KVM probe is not implemented on %s/%s", runtime.GOOS, runtime.GOARCH)}
}
