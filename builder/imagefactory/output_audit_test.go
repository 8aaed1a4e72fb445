package imagefactory_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// outputRules are what issue 17's new user found wrong in build output,
// each as a pattern that must not match a line; the example's build and a
// user's build on its image are held to them (TestAccExample).
var outputRules = []struct {
	name string
	bad  *regexp.Regexp
}{
	{"empty parentheses", regexp.MustCompile(`\(\)`)},
	{"a size without a unit (1.38G, 4K)", regexp.MustCompile(`\b\d+(\.\d+)?[KMGTP]\b[^/]`)},
	{"a bare byte count", regexp.MustCompile(`\b\d{4,} bytes\b`)},
	{"an internal overlay figure", regexp.MustCompile(`raw-view`)},
	{"the hidden working disk named", regexp.MustCompile(`\.work\.raw`)},
	{"a Go slice in an error", regexp.MustCompile(`error downloading .*: \[`)},
	{"a check name that reads wrong when it fails", regexp.MustCompile(`FAIL  the .* passed`)},
	{"a duration in Go's units (1m3.5s, 16ms)", regexp.MustCompile(`\bin \d+m\d|\bin \d+(\.\d+)?(ms|µs)\b`)},
}

// outputProblems lists every line of out that breaks a rule, and every
// line said more than once that must be said once: "Trying <path>" and
// sparsify's line per partition.
func outputProblems(out string) []string {
	var problems []string
	once := map[string]int{}
	onceRe := regexp.MustCompile(`(Trying \S+|  partition \d+( \([^)]*\))?: |  LV \S+ \([^)]*\): )`)
	for _, l := range strings.Split(out, "\n") {
		for _, r := range outputRules {
			if r.bad.MatchString(l) {
				problems = append(problems, fmt.Sprintf("%s: %q", r.name, l))
			}
		}
		if m := onceRe.FindString(l); m != "" {
			once[m]++
			if once[m] == 2 {
				problems = append(problems, fmt.Sprintf("said twice: %q", m))
			}
		}
	}
	return problems
}

// The rules catch what the new user saw (the lines are theirs, from the
// issue and the example's last log before the fixes), and pass the lines
// printed now.
func TestOutputProblems(t *testing.T) {
	for _, tt := range []struct {
		out  string
		want int // problems found
	}{
		{"==> example: FAIL  the boot test passed", 1},
		{"==> t: sparsify: partition 1 (): skipped", 1},
		{"==> t (imagefactory-sparsify): out/.t.qcow2.sparsify.qcow2.raw-view: 200704 bytes allocated before, 462848 after", 2},
		{"==> t: Working disk out/.t.work.raw: sparse-copy of 512 (4K allocated) in 12ms", 3},
		{"--> t: raw disk image: out/mine.raw (1.38G)", 1},
		{"Build 't' errored: error downloading base image: [Get \"http://127.0.0.1:1/x\": connection refused]", 1},
		{"==> t: Trying /tmp/x.img\n==> t: Trying /tmp/x.img", 1},
		{"==> t (imagefactory-sparsify): sparsify: partition 3 (/dev/loop2, ext4 labelled \"r\"): trimmed 943316992 bytes\n  partition 3 (ext4): trimmed\n  partition 3 (ext4): trimmed", 2},
		{"==> t: Root tree made by debootstrap in 2m3s", 1},
		// Now:
		{"==> t: Working disk: sparse-copy of base_image /tmp/mine.raw in 0.012s: 512 MiB (4 KiB allocated)", 0},
		{"==> t (imagefactory-sparsify):   partition 1: skipped: no filesystem found\n  partition 3 (ext4): trimmed 899.62 MiB of free space", 0},
		{"--> t: qcow2 disk image: rewritten in place by a later post-processor, whose artifact below names the file", 0},
		{"==> t: disk_size 100M is smaller than base_image x.xz, whose virtual size is 1 GiB (1073741824 bytes, from its xz index)", 2}, // a refusal quotes the user's disk_size and the exact figure: never in a successful build
		{"    t: Get:1 http://deb.debian.org/debian bookworm/main amd64 libelf1 amd64 0.188-2.1 [174 kB]", 0},
		{"==> t: Chroot mounts: /proc, /sys, /dev, /run, /dev/pts", 0},
		{"==> t: Making a gpt disk (1: BIOS boot, 2: EFI system, 3: root) with a ext4 root from /var/cache/imagefactory/debootstrap-bookworm-minbase-16786442fc0c...", 0},
	} {
		got := outputProblems(tt.out)
		if len(got) != tt.want {
			t.Errorf("%q: %d problems, want %d: %q", tt.out, len(got), tt.want, got)
		}
	}
}
