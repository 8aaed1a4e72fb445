package elements

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallPackagesManagers runs the in-image install-packages helper
// against stand-in package managers (scripts on a private PATH that record
// how they were called): each manager gets DIB's commands for install, -e
// and -u. apt is exercised for real in the acceptance test.
func TestInstallPackagesManagers(t *testing.T) {
	script, err := filepath.Abs("helpers/install-packages")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		pm   string
		args []string
		want []string // the calls recorded, one line each
	}{
		{"dnf", []string{"vim", "curl"}, []string{"dnf -v -y install vim curl", "dnf mark install vim curl"}},
		{"dnf", []string{"-e", "vim"}, []string{"dnf -v -y remove vim"}},
		{"dnf", []string{"-u"}, []string{"dnf -y update"}},
		{"yum", []string{"vim"}, []string{"yum -v -y install vim"}},
		{"yum", []string{"-e", "vim"}, []string{"yum -v -y remove vim"}},
		{"zypper", []string{"vim"}, []string{"zypper --non-interactive --gpg-auto-import-keys install --no-recommends vim"}},
		{"zypper", []string{"-e", "vim"}, []string{"zypper --non-interactive --gpg-auto-import-keys remove --clean-deps vim"}},
		{"zypper", []string{"-u"}, []string{"zypper --non-interactive --gpg-auto-import-keys dist-upgrade --no-recommends"}},
		{"apt-get", []string{"-e", "vim"}, []string{"apt-get --option Dpkg::Options::=--force-confold --option Dpkg::Options::=--force-confdef --assume-yes remove vim"}},
		{"dnf", nil, nil}, // nothing to install: no call
	}
	for _, tt := range tests {
		t.Run(tt.pm+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			bin := t.TempDir()
			log := filepath.Join(t.TempDir(), "calls")
			stub := "#!/bin/sh\necho \"${0##*/} $*\" >> " + log + "\n"
			if err := os.WriteFile(filepath.Join(bin, tt.pm), []byte(stub), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("/bin/bash", append([]string{script}, tt.args...)...)
			cmd.Env = []string{"PATH=" + bin} // only the stand-in: not the host's apt-get
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("install-packages %v: %v\n%s", tt.args, err, out)
			}
			b, _ := os.ReadFile(log)
			got := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(b) == 0 {
				got = nil
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	t.Run("no package manager", func(t *testing.T) {
		cmd := exec.Command("/bin/bash", script, "vim")
		cmd.Env = []string{"PATH=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no apt-get, dnf, yum or zypper") {
			t.Errorf("err %v, output %q", err, out)
		}
	})
}
