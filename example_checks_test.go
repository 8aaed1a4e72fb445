package main

import (
	"os/exec"
	"testing"
)

// TestExampleCheckLines: example/checks.sh's check prints one line that
// reads right whether the check passed or failed (a failed boot once
// printed "FAIL  the boot test passed").
func TestExampleCheckLines(t *testing.T) {
	script := `source example/checks.sh
check "the boot test passes in the build" true
check "the boot test passes in the build" false
check "nginx is installed (/usr/sbin/nginx)" false
echo "failures=$failures"`
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	const golden = `  ok    the boot test passes in the build
  FAIL  expected: the boot test passes in the build
  FAIL  expected: nginx is installed (/usr/sbin/nginx)
failures=2
`
	if string(out) != golden {
		t.Errorf("got:\n%s\nwant:\n%s", out, golden)
	}
}
