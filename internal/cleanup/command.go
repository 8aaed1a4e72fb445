package cleanup

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// CommandName is the plugin binary's subcommand that runs Command.
const CommandName = "reap"

// reapArgs is the parsed command line of Command.
type reapArgs struct {
	journal  string // --journal: one journal
	all      bool   // --all: every journal in stateDir not in use
	stateDir string // --state-dir, with --all
	help     bool
}

const reapUsage = `Usage:
  %[1]s reap --journal PATH
      release what one build holds (one kept by packer build -on-error=abort,
      or left by a build that was killed) and remove its journal
  %[1]s reap --all [--state-dir DIR]
      the same for every such build in DIR (default $IMAGEFACTORY_STATE_DIR,
      else /run/imagefactory)

Releasing means: stop the processes still running in the image's chroot
and its virtual machine, unmount its filesystems, detach its loop devices,
put back the image's files set aside, drop its binfmt_misc registration,
remove its working disk and the output directory of an aborted build.
A build that is still running is never touched. Run it as root.
`

// parseReapArgs reads the arguments after "reap". Errors name the
// argument at fault and what to pass instead.
func parseReapArgs(args []string) (reapArgs, error) {
	var a reapArgs
	fs := flag.NewFlagSet(CommandName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&a.journal, "journal", "", "")
	fs.BoolVar(&a.all, "all", false, "")
	fs.StringVar(&a.stateDir, "state-dir", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return reapArgs{help: true}, nil
		}
		return a, fmt.Errorf("reap: %v", err)
	}
	stateDirSet := false
	fs.Visit(func(f *flag.Flag) { stateDirSet = stateDirSet || f.Name == "state-dir" })
	switch {
	case fs.NArg() > 0:
		return a, fmt.Errorf("reap: unexpected argument %q: name a journal with --journal PATH, or pass --all", fs.Arg(0))
	case a.journal != "" && a.all:
		return a, errors.New("reap: --journal and --all exclude each other: pass one")
	case a.journal == "" && !a.all:
		return a, errors.New("reap: say what to release: --journal PATH (the command a build printed) or --all")
	case stateDirSet && a.stateDir == "":
		return a, errors.New("reap: --state-dir is empty: name the directory holding the journals")
	case stateDirSet && !a.all:
		return a, errors.New("reap: --state-dir goes with --all; --journal takes the journal's own path")
	}
	if a.all && a.stateDir == "" {
		a.stateDir = DefaultStateDir()
	}
	return a, nil
}

// Command runs `packer-plugin-imagefactory reap ARGS`: args are those after
// "reap". It writes one line per released resource and per journal to
// stdout, errors to stderr, and returns the exit status: 0 when everything
// asked for is released (or nothing was left), 1 when something could not
// be released or the journal is a running build's, 2 for a usage error.
func Command(args []string, stdout, stderr io.Writer) int {
	a, err := parseReapArgs(args)
	if a.help {
		fmt.Fprintf(stdout, reapUsage, programName())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n\n", err)
		fmt.Fprintf(stderr, reapUsage, programName())
		return 2
	}
	var rep Report
	if a.all {
		rep, err = ReapKept(a.stateDir)
	} else {
		rep, err = ReapJournal(a.journal)
	}
	for _, l := range rep.Released {
		fmt.Fprintln(stdout, l)
	}
	for _, l := range rep.Journals {
		fmt.Fprintln(stdout, l)
	}
	if a.all {
		for _, l := range rep.Live {
			fmt.Fprintf(stdout, "left alone: %s\n", l)
		}
		if rep.Empty() && err == nil {
			fmt.Fprintf(stdout, "nothing to release in %s\n", a.stateDir)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "reap: %v\n", err)
		return 1
	}
	return 0
}

// ReapCommandLine is the shell command that releases the journal at path:
// this executable (the installed plugin, by its absolute path) with
// `reap --journal`, each word quoted for a POSIX shell where it needs it.
func ReapCommandLine(path string) string {
	exe, err := os.Executable()
	if err != nil {
		exe = "packer-plugin-imagefactory"
	}
	return shellQuote(exe) + " " + CommandName + " --journal " + shellQuote(path)
}

// shellQuote returns s as one word of a POSIX shell: as it is when it
// holds only characters no shell treats specially, else in single quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+=:@,%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func programName() string {
	if len(os.Args) > 0 && os.Args[0] != "" {
		return os.Args[0]
	}
	return "packer-plugin-imagefactory"
}
