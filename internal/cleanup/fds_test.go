package cleanup

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A descriptor inherited without close-on-exec (as Packer's panicwrap
// passes its stdout) reaches a child until CloseInheritedFDs; then the
// child sees only its own.
func TestCloseInheritedFDs(t *testing.T) {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	inChild := func() bool {
		out, err := exec.Command("sh", "-c", "test -e /proc/self/fd/"+strconv.Itoa(fd)+" && echo yes || echo no").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out)) == "yes"
	}
	if !inChild() {
		t.Fatalf("descriptor %d did not reach the child before: the test proves nothing", fd)
	}
	if err := CloseInheritedFDs(); err != nil {
		t.Fatal(err)
	}
	if inChild() {
		t.Errorf("descriptor %d still reaches the child", fd)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor %d: flags %#x, %v", fd, flags, err)
	}
}
