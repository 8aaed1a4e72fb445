package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A run as go test -json prints it (Go 1.26): a package with a skip that
// names its reason, one without, a multi-line reason, a failed subtest, a
// package that panicked outside its tests' bookkeeping, and a build error.
const events = `{"Action":"start","Package":"m/a"}
{"Action":"run","Package":"m/a","Test":"TestSkip"}
{"Action":"output","Package":"m/a","Test":"TestSkip","Output":"=== RUN   TestSkip\n"}
{"Action":"output","Package":"m/a","Test":"TestSkip","Output":"    a_test.go:5: an earlier log line\n"}
{"Action":"output","Package":"m/a","Test":"TestSkip","Output":"    run.go:37: fixture: needs root\n"}
{"Action":"output","Package":"m/a","Test":"TestSkip","Output":"--- SKIP: TestSkip (0.00s)\n"}
{"Action":"skip","Package":"m/a","Test":"TestSkip"}
{"Action":"run","Package":"m/a","Test":"TestBare"}
{"Action":"output","Package":"m/a","Test":"TestBare","Output":"=== RUN   TestBare\n"}
{"Action":"output","Package":"m/a","Test":"TestBare","Output":"--- SKIP: TestBare (0.00s)\n"}
{"Action":"skip","Package":"m/a","Test":"TestBare"}
{"Action":"run","Package":"m/a","Test":"TestMulti/sub"}
{"Action":"output","Package":"m/a","Test":"TestMulti/sub","Output":"    a_test.go:9: first line\n"}
{"Action":"output","Package":"m/a","Test":"TestMulti/sub","Output":"        second line\n"}
{"Action":"output","Package":"m/a","Test":"TestMulti/sub","Output":"    --- SKIP: TestMulti/sub (0.00s)\n"}
{"Action":"skip","Package":"m/a","Test":"TestMulti/sub"}
{"Action":"output","Package":"m/a","Test":"TestFail/sub","Output":"    a_test.go:20: got 1, want 2\n"}
{"Action":"output","Package":"m/a","Test":"TestFail/sub","Output":"    --- FAIL: TestFail/sub (0.00s)\n"}
{"Action":"fail","Package":"m/a","Test":"TestFail/sub"}
{"Action":"output","Package":"m/a","Test":"TestFail","Output":"--- FAIL: TestFail (0.00s)\n"}
{"Action":"fail","Package":"m/a","Test":"TestFail","Elapsed":2.5}
{"Action":"output","Package":"m/a","Test":"TestPass","Output":"    a_test.go:30: quiet on success\n"}
{"Action":"pass","Package":"m/a","Test":"TestPass","Elapsed":31.25}
{"Action":"output","Package":"m/a","Output":"FAIL\n"}
{"Action":"output","Package":"m/a","Output":"FAIL\tm/a\t0.01s\n"}
{"Action":"fail","Package":"m/a"}
{"Action":"output","Package":"m/b","Test":"TestHung","Output":"=== RUN   TestHung\n"}
{"Action":"output","Package":"m/b","Output":"panic: test timed out after 1s\n"}
{"Action":"output","Package":"m/b","Output":"FAIL\tm/b\t1.00s\n"}
{"Action":"fail","Package":"m/b"}
{"Action":"output","Package":"m/c","Output":"ok  \tm/c\t0.02s\n"}
{"Action":"pass","Package":"m/c"}
{"ImportPath":"m/d [m/d.test]","Action":"build-output","Output":"d_test.go:3:2: undefined: x\n"}
{"ImportPath":"m/d [m/d.test]","Action":"build-fail"}
{"Action":"output","Package":"m/d","Output":"FAIL\tm/d [build failed]\n"}
{"Action":"fail","Package":"m/d"}
{"Action":"skip","Package":"m/e"}
`

func TestReport(t *testing.T) {
	var out strings.Builder
	r := newReport(&out, false)
	for _, l := range strings.Split(strings.TrimSpace(events), "\n") {
		r.line([]byte(l))
	}
	named := r.summary()
	if named {
		t.Error("a skip without a reason passed the rule")
	}
	want := `    a_test.go:20: got 1, want 2
    --- FAIL: TestFail/sub (0.00s)
--- FAIL: TestFail (0.00s)
FAIL	m/a	0.01s
=== RUN   TestHung
panic: test timed out after 1s
FAIL	m/b	1.00s
ok  	m/c	0.02s
d_test.go:3:2: undefined: x
FAIL	m/d [build failed]

Slowest tests:
     31.2s m/a TestPass
      2.5s m/a TestFail

Skipped tests: 3
  m/a TestSkip: fixture: needs root
  m/a TestBare: NO REASON GIVEN (a test may skip only for a reason it names)
  m/a TestMulti/sub: first line second line
3 skipped, 2 failed
`
	if got := out.String(); got != want {
		t.Errorf("report:\n%s\nwant:\n%s", got, want)
	}
}

// TestExitStatus: the command keeps go test's status, and a skip without
// a reason fails a run that passed. It runs go test on packages it writes.
func TestExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs go test on three small modules")
	}
	bin := filepath.Join(t.TempDir(), "testreport")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	both := `func TestA(t *testing.T) { t.Fatal("broken") }
func TestB(t *testing.T) { t.Skip("second group ran") }`
	for _, tc := range []struct {
		name, body, want string
		code             int
		args             []string
	}{
		{"pass", `func TestA(t *testing.T) {}`, "0 skipped, 0 failed", 0, nil},
		{"named skip", `func TestA(t *testing.T) { t.Skip("no widget here") }`, "TestA: no widget here", 0, nil},
		{"bare skip", `func TestA(t *testing.T) { t.SkipNow() }`, "NO REASON GIVEN", 1, nil},
		{"fail", `func TestA(t *testing.T) { t.Fatal("broken") }`, "x_test.go:4: broken", 1, nil},
		// Two go tests, one report: the second runs after the first failed,
		// and the first's failure is the exit status.
		{"groups", both, "1 skipped, 1 failed", 1, []string{"-count=1", "-run", "TestA", "./...", "-then", "-count=1", "-run", "TestB", "./..."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n\ngo 1.22\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			src := "package x\n\nimport \"testing\"\n" + tc.body + "\n"
			if err := os.WriteFile(filepath.Join(dir, "x_test.go"), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			args := tc.args
			if args == nil {
				args = []string{"-count=1", "./..."}
			}
			cmd := exec.Command(bin, args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), tc.want) {
				t.Errorf("exit %d, want %d; output lacks %q?\n%s", code, tc.code, tc.want, out)
			}
		})
	}
}

func TestGroups(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want [][]string
	}{
		{nil, [][]string{{}}},
		{[]string{"-p", "2", "./..."}, [][]string{{"-p", "2", "./..."}}},
		{[]string{"-p", "2", "./a", "-then", "-p", "1", "./b"}, [][]string{{"-p", "2", "./a"}, {"-p", "1", "./b"}}},
		{[]string{"-then", "./a", "-then"}, [][]string{{"./a"}}},
	} {
		if got := groups(tc.args); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("groups(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
