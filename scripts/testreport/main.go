// Command testreport runs `go test -json ARGS...` and keeps the terminal
// short: each package's result line, the output of the tests that failed
// (and of a package that failed outside any test, such as a build error or
// a timeout's panic), then every skipped test with the reason it gave and
// the count of skips, and the slowest tests (what the suite's time budget
// is spent on). It exits with go test's status, and with 1 when a
// test skipped without naming a reason (the project's rule: a test may
// skip only for a reason it names).
//
// Usage: go run ./scripts/testreport [-stream] [go test flags and packages]
// [-then go test flags and packages]... (-stream also prints every test's
// output as it comes, for long runs such as make testacc). Each -then
// starts another go test, run after the one before has ended, into the
// same report: packages that must not run beside others (they compare
// host-wide state, such as binfmt_misc) go in a group of their own. Every
// group runs even if one before failed; the exit status is the first
// failed group's.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
)

// event is one line of `go test -json` (cmd/test2json's TestEvent).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output and build-fail events
	Test       string
	Output     string
	Elapsed    float64 // seconds, on pass, fail and skip
}

// Timing is a top-level test's duration (go test -json's Elapsed).
type Timing struct {
	Package, Test string
	Seconds       float64
}

// slowest is how many tests the summary names by duration.
const slowest = 15

// Skip is a test that skipped, and the reason it gave ("" for none).
type Skip struct {
	Package, Test, Reason string
}

// report folds the events of one run.
type report struct {
	out    io.Writer
	stream bool
	output map[string][]string // by package + "\x00" + test ("" for the package)
	failed map[string]bool     // packages with a failed test
	Skips  []Skip
	Fails  int
	Times  []Timing // top-level tests that passed or failed
}

func newReport(out io.Writer, stream bool) *report {
	return &report{out: out, stream: stream, output: map[string][]string{}, failed: map[string]bool{}}
}

// logLine is the start of a t.Log, t.Skip or t.Error line: "    file_test.go:12: ".
var logLine = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

// skipReason is the last message a test logged before it skipped: t.Skip
// logs its arguments like t.Log, before the "--- SKIP" line. Lines that
// continue a multi-line message are kept with it.
func skipReason(lines []string) string {
	start := -1
	for i, l := range lines {
		if logLine.MatchString(l) {
			start = i
		}
	}
	if start < 0 {
		return ""
	}
	var msg []string
	for i, l := range lines[start:] {
		if i == 0 {
			l = logLine.ReplaceAllString(l, "")
		}
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "=== ") {
			break
		}
		msg = append(msg, t)
	}
	return strings.TrimSpace(strings.Join(msg, " "))
}

// line handles one line of go test's standard output.
func (r *report) line(raw []byte) {
	var e event
	if err := json.Unmarshal(raw, &e); err != nil || e.Action == "" {
		fmt.Fprintln(r.out, string(raw)) // not an event: go's own messages
		return
	}
	key := e.Package + "\x00" + e.Test
	if (e.Action == "pass" || e.Action == "fail") && e.Test != "" && !strings.Contains(e.Test, "/") {
		r.Times = append(r.Times, Timing{e.Package, e.Test, e.Elapsed})
	}
	switch e.Action {
	case "build-output": // a compiler's message: short, and what to fix
		fmt.Fprint(r.out, e.Output)
	case "output":
		r.output[key] = append(r.output[key], strings.TrimRight(e.Output, "\n"))
		if r.stream && e.Test != "" {
			fmt.Fprint(r.out, e.Output)
		}
	case "skip":
		if e.Test != "" {
			r.Skips = append(r.Skips, Skip{e.Package, e.Test, skipReason(r.output[key])})
		}
		delete(r.output, key)
	case "pass":
		if e.Test == "" {
			r.packageDone(e.Package, false)
		}
		delete(r.output, key)
	case "fail":
		if e.Test != "" {
			r.Fails++
			r.failed[e.Package] = true
			if !r.stream {
				fmt.Fprintln(r.out, strings.Join(r.output[key], "\n"))
			}
			delete(r.output, key)
			return
		}
		r.packageDone(e.Package, true)
	}
}

// packageDone prints a package's own lines: its result ("ok ...",
// "FAIL ..."), and when it failed with no failed test (a build error, a
// panic or a timeout outside the tests' bookkeeping), all it printed.
func (r *report) packageDone(pkg string, failed bool) {
	key := pkg + "\x00"
	lines := r.output[key]
	delete(r.output, key)
	if failed && !r.failed[pkg] {
		for k, l := range r.output {
			if strings.HasPrefix(k, key) {
				lines = append(l, lines...)
				delete(r.output, k)
			}
		}
		fmt.Fprintln(r.out, strings.Join(lines, "\n"))
		return
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "FAIL\t") {
			fmt.Fprintln(r.out, l)
		}
	}
}

// summary prints the slowest tests, then the skips and their count; it
// reports whether every skip named its reason.
func (r *report) summary() bool {
	ok := true
	times := slices.Clone(r.Times)
	slices.SortStableFunc(times, func(a, b Timing) int { return cmp.Compare(b.Seconds, a.Seconds) })
	if len(times) > slowest {
		times = times[:slowest]
	}
	if len(times) > 0 {
		fmt.Fprintf(r.out, "\nSlowest tests:\n")
	}
	for _, tm := range times {
		fmt.Fprintf(r.out, "  %7.1fs %s %s\n", tm.Seconds, strings.TrimPrefix(tm.Package, module+"/"), tm.Test)
	}
	fmt.Fprintf(r.out, "\nSkipped tests: %d\n", len(r.Skips))
	for _, s := range r.Skips {
		reason := s.Reason
		if reason == "" {
			reason = "NO REASON GIVEN (a test may skip only for a reason it names)"
			ok = false
		}
		fmt.Fprintf(r.out, "  %s %s: %s\n", strings.TrimPrefix(s.Package, module+"/"), s.Test, reason)
	}
	fmt.Fprintf(r.out, "%d skipped, %d failed\n", len(r.Skips), r.Fails)
	return ok
}

const module = "github.com/imagefactory/packer-plugin-imagefactory"

// groups splits args at each -then into the arguments of one go test
// each; empty groups are dropped (no arguments at all is one empty group).
func groups(args []string) [][]string {
	var out [][]string
	cur := []string{}
	for _, a := range append(args, "-then") {
		if a != "-then" {
			cur = append(cur, a)
			continue
		}
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur = []string{}
	}
	if len(out) == 0 {
		out = [][]string{{}} // go test alone: the package here
	}
	return out
}

// run runs `go test -json args` into r and returns go test's error.
func run(r *report, args []string) error {
	cmd := exec.Command("go", append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		r.line(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "testreport: reading go test's output:", err)
	}
	return cmd.Wait()
}

func main() {
	args := os.Args[1:]
	stream := len(args) > 0 && args[0] == "-stream"
	if stream {
		args = args[1:]
	}
	// Ctrl-C reaches go test through the process group; this process
	// stays to print what ran.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	r := newReport(os.Stdout, stream)
	var err error
	for _, g := range groups(args) {
		if gerr := run(r, g); err == nil {
			err = gerr
		}
	}
	named := r.summary()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		if code := exit.ExitCode(); code > 0 {
			os.Exit(code)
		}
		os.Exit(1) // killed by a signal
	case err != nil:
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	case !named:
		os.Exit(1)
	}
}
