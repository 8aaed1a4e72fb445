package sbom

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// RPMChildCommand is the subcommand of the plugin's binary that lists a
// copied rpm database in a child process (RunRPMChild).
const RPMChildCommand = "sbom-rpmdb"

// IsolateRPM, when true, makes Read list rpm databases in a child process:
// the running binary (os.Executable) with RPMChildCommand, which must
// dispatch to RunRPMChild (the plugin's main does). go-rpmdb parses in
// goroutines of its own, where a hostile database's panic cannot be
// recovered and would end the plugin and the build with it; in a child it
// is one Incomplete line. Off by default: a binary that does not dispatch
// (a test binary) must not be re-run.
var IsolateRPM bool

// rpmChildTimeout bounds the child: a database the library loops on must
// not hold the build.
const rpmChildTimeout = 2 * time.Minute

// RunRPMChild is RPMChildCommand: args is one path, of a database already
// copied out of the image; it writes the packages as JSON on stdout.
// Returns the process's exit status: 0, or 2 with the reason on stderr.
func RunRPMChild(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "usage: %s DATABASE-FILE\n", RPMChildCommand)
		return 2
	}
	pkgs, err := listRPMDB(args[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if err := json.NewEncoder(stdout).Encode(pkgs); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	return 0
}

// listRPMChild runs RunRPMChild in a child process on file.
func listRPMChild(file string) ([]Package, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpmChildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, RPMChildCommand, file)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Killed with the plugin (kill -9 of a build), never left behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		why := lastLine(errb.String())
		if ctx.Err() != nil {
			why = fmt.Sprintf("no answer in %s", rpmChildTimeout)
		}
		if why == "" {
			why = err.Error()
		}
		return nil, fmt.Errorf("the rpm database reader failed: %s", why)
	}
	var pkgs []Package
	if err := json.Unmarshal(out.Bytes(), &pkgs); err != nil {
		return nil, fmt.Errorf("the rpm database reader's answer: %v", err)
	}
	return pkgs, nil
}

// lastLine is the last non-empty line of s; for a Go panic, its message
// line ("panic: ..."), which says more than the goroutine dump after it.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "panic: ") {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}
