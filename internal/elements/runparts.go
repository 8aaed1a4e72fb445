package elements

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// scriptName is dib-run-parts' allowed_regex.
var scriptName = regexp.MustCompile(`^[0-9A-Za-z_-]+$`)

// envName is the filter dib-run-parts applies to environment.d files
// (grep -E "/[0-9A-Za-z_\.-]+$" on the path).
var envName = regexp.MustCompile(`^[0-9A-Za-z_.-]+$`)

// Skip is a file dib-run-parts would not run, and why.
type Skip struct{ Name, Reason string }

// SelectScripts lists the scripts dib-run-parts runs from dir: regular
// files or links to one (find -xtype f) at depth 1, executable, named by
// ^[0-9A-Za-z_-]+$, in `LANG=C sort -n` order. The others are returned as
// skips, so that the caller can log them (dib-run-parts only does with
// DIB_DEBUG_TRACE). A missing dir is empty.
func SelectScripts(dir string) (run []string, skipped []Skip, err error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, de := range ents {
		p := filepath.Join(dir, de.Name())
		fi, err := os.Stat(p) // -xtype f: the link's target
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		switch {
		case unix.Access(p, unix.X_OK) != nil || fi.Mode()&0o111 == 0:
			skipped = append(skipped, Skip{de.Name(), "not executable"})
		case !scriptName.MatchString(de.Name()):
			skipped = append(skipped, Skip{de.Name(), "name does not match ^[0-9A-Za-z_-]+$"})
		default:
			run = append(run, de.Name())
		}
	}
	SortNumeric(run)
	return run, skipped, nil
}

// EnvFiles lists the environment.d files dib-run-parts sources, in its
// order: regular files or links to one, any mode, named by
// [0-9A-Za-z_.-]+, `LANG=C sort -n`.
func EnvFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range ents {
		fi, err := os.Stat(filepath.Join(dir, de.Name()))
		if err != nil || !fi.Mode().IsRegular() || !envName.MatchString(de.Name()) {
			continue
		}
		out = append(out, de.Name())
	}
	SortNumeric(out)
	return out, nil
}

// SortNumeric sorts as `LANG=C sort -n`: by the leading number (optional
// blanks, optional '-', digits, optional '.' fraction; none is zero), then
// bytewise on the whole line (sort's last-resort comparison).
func SortNumeric(names []string) {
	sort.SliceStable(names, func(i, j int) bool {
		if c := compareNumeric(names[i], names[j]); c != 0 {
			return c < 0
		}
		return names[i] < names[j]
	})
}

// numPrefix splits the numeric prefix of s into sign, integer digits
// (without leading zeros) and fraction digits (without trailing zeros).
func numPrefix(s string) (neg bool, intPart, frac string) {
	s = strings.TrimLeft(s, " \t")
	if strings.HasPrefix(s, "-") {
		neg = true
		s = s[1:]
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intPart = strings.TrimLeft(s[:i], "0")
	if i < len(s) && s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		frac = strings.TrimRight(s[i+1:j], "0")
	}
	if intPart == "" && frac == "" {
		neg = false // -0 == 0
	}
	return
}

func compareNumeric(a, b string) int {
	an, ai, af := numPrefix(a)
	bn, bi, bf := numPrefix(b)
	if an != bn {
		if an {
			return -1
		}
		return 1
	}
	c := compareAbs(ai, af, bi, bf)
	if an {
		return -c
	}
	return c
}

func compareAbs(ai, af, bi, bf string) int {
	if len(ai) != len(bi) {
		if len(ai) < len(bi) {
			return -1
		}
		return 1
	}
	if c := strings.Compare(ai, bi); c != 0 {
		return c
	}
	return strings.Compare(af, bf)
}

// Describe renders skips for a log line.
func (s Skip) String() string { return fmt.Sprintf("%s (%s)", s.Name, s.Reason) }
