package elements

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestInstallPackagesManagers runs the in-image install-packages helper
// against stand-in package managers (scripts on a private PATH that record
// how they were called): each manager gets DIB's commands (pacman's and
// apk's from their man pages) for install, -e, -u, -d and -m. It runs under
// every POSIX shell found: dash (Debian's /bin/sh), busybox ash (Alpine's)
// and bash. apt is exercised for real in the acceptance test.
func TestInstallPackagesManagers(t *testing.T) {
	script, err := filepath.Abs("helpers/install-packages")
	if err != nil {
		t.Fatal(err)
	}
	shells := map[string][]string{}
	for name, argv := range map[string][]string{"dash": {"/bin/dash"}, "ash": {"/bin/busybox", "ash"}, "bash": {"/bin/bash"}} {
		if _, err := os.Stat(argv[0]); err == nil {
			shells[name] = argv
		}
	}
	if len(shells) < 2 {
		t.Fatalf("want dash and busybox ash (busybox-static) to run the helper with, have %v", shells)
	}
	const pac = "pacman --noconfirm "
	tests := []struct {
		pm   string
		args []string
		want []string // the calls recorded, one line each
		more []string // more stand-ins
	}{
		{"dnf", []string{"vim", "curl"}, []string{"dnf -v -y install vim curl", "dnf mark install vim curl"}, nil},
		{"dnf", []string{"-e", "vim"}, []string{"dnf -v -y remove vim"}, nil},
		{"dnf", []string{"-u"}, []string{"dnf -y update"}, nil},
		{"dnf", []string{"-d", "DL", "vim"}, []string{"dnf download --destdir=DL vim"}, nil},
		{"dnf", []string{"-m", "el", "vim", "curl"}, []string{"pkg-map --element el vim curl", "dnf -v -y install vim-enhanced curl", "dnf mark install vim-enhanced curl"}, nil},
		{"yum", []string{"vim"}, []string{"yum -v -y install vim"}, nil},
		{"yum", []string{"-e", "vim"}, []string{"yum -v -y remove vim"}, nil},
		{"yum", []string{"-d", "DL", "vim"}, []string{"yumdownloader --destdir=DL vim"}, []string{"yumdownloader"}},
		{"zypper", []string{"vim"}, []string{"zypper --non-interactive --gpg-auto-import-keys install --no-recommends vim"}, nil},
		{"zypper", []string{"-e", "vim"}, []string{"zypper --non-interactive --gpg-auto-import-keys remove --clean-deps vim"}, nil},
		{"zypper", []string{"-u"}, []string{"zypper --non-interactive --gpg-auto-import-keys dist-upgrade --no-recommends"}, nil},
		{"zypper", []string{"-d", "DL", "vim"}, []string{"zypper --non-interactive --gpg-auto-import-keys install --no-recommends --download-only vim"}, nil},
		// No sync databases on this host: they are fetched first.
		{"pacman", []string{"vim", "curl"}, []string{pac + "-Sy", pac + "-S --needed vim curl"}, nil},
		{"pacman", []string{"-e", "vim"}, []string{pac + "-Rs vim"}, nil},
		{"pacman", []string{"-u"}, []string{pac + "-Syu"}, nil},
		{"pacman", []string{"-d", "DL", "vim"}, []string{pac + "-Sw --cachedir DL vim"}, nil},
		// No APKINDEX in /var/cache/apk on this host: the index is fetched.
		{"apk", []string{"vim", "curl"}, []string{"apk add --no-progress --update-cache vim curl"}, nil},
		{"apk", []string{"-e", "vim"}, []string{"apk del --no-progress vim"}, nil},
		{"apk", []string{"-u"}, []string{"apk upgrade --no-progress --update-cache"}, nil},
		{"apk", []string{"-d", "DL", "vim"}, []string{"apk fetch --no-progress --output DL vim"}, nil},
		{"apk", []string{"-m", "el", "vim"}, []string{"pkg-map --element el vim", "apk add --no-progress --update-cache vim-enhanced"}, nil},
		{"apt-get", []string{"-e", "vim"}, []string{"apt-get --option Dpkg::Options::=--force-confold --option Dpkg::Options::=--force-confdef --assume-yes remove vim"}, nil},
		{"dnf", nil, nil, nil}, // nothing to install: no call
		{"apk", []string{"-m", "el", "gone"}, []string{"pkg-map --element el gone"}, nil}, // mapped to nothing: no call
	}
	for shell, argv := range shells {
		for _, tt := range tests {
			t.Run(shell+" "+tt.pm+" "+strings.Join(tt.args, " "), func(t *testing.T) {
				bin := t.TempDir()
				log := filepath.Join(t.TempDir(), "calls")
				dl := filepath.Join(t.TempDir(), "dl")
				stub := "#!/bin/sh\necho \"${0##*/} $*\" >> " + log + "\n"
				// pkg-map maps vim to vim-enhanced and gone to nothing.
				pkgMap := stub + "for p do case $p in --element|el) ;; vim) printf 'vim-enhanced ' ;; gone) ;; *) printf '%s ' \"$p\" ;; esac; done; echo\n"
				stubs := map[string]string{tt.pm: stub, "pkg-map": pkgMap}
				for _, name := range tt.more {
					stubs[name] = stub
				}
				for name, content := range stubs {
					if err := os.WriteFile(filepath.Join(bin, name), []byte(content), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				// The only host tool the helper needs (-d); not the host's apt-get.
				if err := os.Symlink("/bin/mkdir", filepath.Join(bin, "mkdir")); err != nil {
					t.Fatal(err)
				}
				args := make([]string, len(tt.args))
				for i, a := range tt.args {
					args[i] = strings.ReplaceAll(a, "DL", dl)
				}
				cmd := exec.Command(argv[0], append(append(argv[1:], script), args...)...)
				cmd.Env = []string{"PATH=" + bin}
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("install-packages %v: %v\n%s", tt.args, err, out)
				}
				b, _ := os.ReadFile(log)
				got := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(b), dl, "DL")), "\n")
				if len(b) == 0 {
					got = nil
				}
				if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
					t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
				}
				if slices.Contains(tt.args, "-d") {
					if fi, err := os.Stat(dl); err != nil || !fi.IsDir() {
						t.Errorf("-d did not make the download directory: %v", err)
					}
				}
			})
		}
		t.Run(shell+" no package manager", func(t *testing.T) {
			cmd := exec.Command(argv[0], append(append(argv[1:], script), "vim")...)
			cmd.Env = []string{"PATH=" + t.TempDir()}
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "no apt-get, dnf, yum, zypper, pacman or apk") {
				t.Errorf("err %v, output %q", err, out)
			}
		})
	}
}
