package cleanup

import (
	"strings"
	"testing"
)

// TestBinfmtEntryValidate: a damaged journal must never make the reaper
// remove a registration that is not ours (a host's qemu-aarch64, Java's
// jar) or write outside binfmt_misc.
func TestBinfmtEntryValidate(t *testing.T) {
	ok := Entry{Kind: KindBinfmt, Path: BinfmtState, Name: BinfmtPrefix + "qemu-arm", Aside: "1-2-abc", PID: 1234, PIDStart: 5}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid entry refused: %v", err)
	}
	for name, mut := range map[string]func(*Entry){
		"the host's entry":  func(e *Entry) { e.Name = "qemu-arm" },
		"the prefix alone":  func(e *Entry) { e.Name = BinfmtPrefix },
		"a path in name":    func(e *Entry) { e.Name = BinfmtPrefix + "../status" },
		"a register string": func(e *Entry) { e.Name = BinfmtPrefix + ":x:M::" },
		"another state dir": func(e *Entry) { e.Path = "/tmp/state" },
		"no marker":         func(e *Entry) { e.Aside = "" },
		"marker with a dir": func(e *Entry) { e.Aside = "../lock" },
	} {
		e := ok
		mut(&e)
		if err := e.validate(); err == nil || !strings.Contains(err.Error(), "binfmt") {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}
