package sbom

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestParseOSRelease(t *testing.T) {
	for _, tc := range []struct{ in, key, want string }{
		{`ID=debian`, "ID", "debian"},
		{`PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"`, "PRETTY_NAME", "Debian GNU/Linux 12 (bookworm)"},
		{`NAME='openSUSE Leap'`, "NAME", "openSUSE Leap"},
		{`NAME="say \"hi\" \$x \\ \` + "`" + `"`, "NAME", "say \"hi\" $x \\ `"},
		{"# comment\n  VERSION_ID=\"9.4\"  \n", "VERSION_ID", "9.4"},
		{"BROKEN LINE\nID=rocky", "ID", "rocky"},
		{`ID=fedora # not a comment in shell quoting, kept`, "ID", "fedora # not a comment in shell quoting, kept"},
	} {
		if got := parseOSRelease(tc.in)[tc.key]; got != tc.want {
			t.Errorf("%q: %s = %q, want %q", tc.in, tc.key, got, tc.want)
		}
	}
}

func TestOSAndKernels(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		links   map[string]string
		os      OS
		kernels []string
	}{
		{"etc first", map[string]string{"etc/os-release": "ID=a\nVERSION_ID=1\n", "usr/lib/os-release": "ID=b\n"}, nil, OS{ID: "a", VersionID: "1"}, nil},
		{"usr/lib fallback", map[string]string{"usr/lib/os-release": "ID=b\nNAME=B\n"}, nil, OS{ID: "b", Name: "B"}, nil},
		// Debian: /etc/os-release -> ../usr/lib/os-release, /lib -> usr/lib.
		{"debian symlinks", map[string]string{
			"usr/lib/os-release":                           "ID=debian\nVERSION_ID=\"12\"\n",
			"usr/lib/modules/6.1.0-18-amd64/modules.dep":   "",
			"usr/lib/modules/6.1.0-17-amd64/modules.order": "",
			"usr/lib/modules/6.1.0-9-amd64/x":              "",
			"boot/vmlinuz-6.1.0-18-amd64":                  "kernel",
			"boot/vmlinuz-6.1.0-20-amd64":                  "kernel",
			"boot/config-6.1.0-99-amd64":                   "",
		}, map[string]string{"etc/os-release": "../usr/lib/os-release", "lib": "usr/lib", "boot/vmlinuz": "vmlinuz-6.1.0-20-amd64"},
			OS{ID: "debian", VersionID: "12"}, []string{"6.1.0-17-amd64", "6.1.0-18-amd64", "6.1.0-20-amd64", "6.1.0-9-amd64"}},
		{"empty modules dir is no kernel", map[string]string{"lib/modules/5.14.0-427.el9.x86_64/modules.dep": ""}, map[string]string{}, OS{}, []string{"5.14.0-427.el9.x86_64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := writeTree(t, tc.files)
			for name, target := range tc.links {
				os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755)
				if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
					t.Fatal(err)
				}
			}
			os.MkdirAll(filepath.Join(root, "lib/modules/0.0.0-removed"), 0o755)
			inv := mustRead(t, root)
			if inv.OS != tc.os || !slices.Equal(inv.Kernels, tc.kernels) || len(inv.Incomplete) != 0 {
				t.Errorf("OS %+v kernels %q incomplete %q, want %+v %q", inv.OS, inv.Kernels, inv.Incomplete, tc.os, tc.kernels)
			}
		})
	}
}
