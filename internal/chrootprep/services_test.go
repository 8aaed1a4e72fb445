package chrootprep

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
)

// TestBlockServicesFamilies: what BlockServices does per family, on small
// trees, and that Restore puts every file back.
func TestBlockServicesFamilies(t *testing.T) {
	const orig = "#!/bin/sh\necho the image's service \"$@\"\n"
	wrapped := func(name string) string { return name + " wrapped (no start, stop, restart or reload)" }
	tests := []struct {
		name    string
		files   map[string]string // path -> content
		links   map[string]string // path -> target
		did     []string
		wrapped []string
		wantErr string
	}{
		{
			name:    "rpm family: systemd, service(8), /sbin -> usr/sbin",
			files:   map[string]string{"etc/redhat-release": "Rocky Linux release 9.4 (Blue Onyx)\n", "usr/sbin/service": orig, "usr/bin/systemctl": "elf"},
			links:   map[string]string{"sbin": "usr/sbin"},
			did:     []string{wrapped("/usr/sbin/service"), "systemctl offline (SYSTEMD_OFFLINE=1)"},
			wrapped: []string{"/usr/sbin/service"},
		},
		{
			name:    "split /sbin and /usr/sbin, service in both",
			files:   map[string]string{"usr/sbin/service": orig, "sbin/service": orig},
			did:     []string{wrapped("/usr/sbin/service"), wrapped("/sbin/service")},
			wrapped: []string{"/usr/sbin/service", "/sbin/service"},
		},
		{
			name:  "service is a link to systemctl",
			files: map[string]string{"bin/systemctl": "elf"},
			links: map[string]string{"usr/sbin/service": "/bin/systemctl"},
			did:   []string{"systemctl offline (SYSTEMD_OFFLINE=1)"},
		},
		{
			name:  "debian: policy-rc.d and service(8)",
			files: map[string]string{"etc/debian_version": "12.0\n", "usr/sbin/service": orig},
			did:   []string{PolicyRcD + " (exit 101)", wrapped("/usr/sbin/service")},
			// wrapped is checked for service only; policy-rc.d by TestBlockServices.
			wrapped: []string{"/usr/sbin/service"},
		},
		{
			name:  "alpine: OpenRC not booted",
			files: map[string]string{"etc/alpine-release": "3.20.0\n", "sbin/openrc-run": "elf"},
			did:   []string{"OpenRC not booted (no " + OpenRCSoftlevel + ")"},
		},
		{
			name:    "alpine: a booted /run in the chroot",
			files:   map[string]string{"sbin/openrc-run": "elf", "usr/sbin/service": orig, "run/openrc/softlevel": "default\n"},
			wantErr: OpenRCSoftlevel + ", so OpenRC would start",
		},
		{
			name: "nothing to block",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			for p, c := range tc.files {
				writeFile(t, w.path(p), c, 0o755)
			}
			for p, target := range tc.links {
				must(t, os.MkdirAll(filepath.Dir(w.path(p)), 0o755))
				symlink(t, target, w.path(p))
			}
			w.open(t)
			before := map[string]entry{}
			for _, p := range ServicePaths {
				before[p] = snap(t, w.path(p))
			}
			restore, did, err := BlockServices(w.root)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("BlockServices error = %v, want one containing %q", err, tc.wantErr)
				}
			} else {
				must(t, err)
				if !reflect.DeepEqual(did, tc.did) {
					t.Errorf("did = %q, want %q", did, tc.did)
				}
				for _, p := range tc.wrapped {
					if e := snap(t, w.path(p)); e.content != string(serviceWrapper(p)) || e.mode.Perm() != 0o755 {
						t.Errorf("while blocked, %s = %+v, want the wrapper", p, e)
					}
					if e := snap(t, w.path(p+backupSuffix)); e.content != orig {
						t.Errorf("while blocked, the image's %s is not at %s: %+v", p, p+backupSuffix, e)
					}
				}
				must(t, restore())
				must(t, restore())
			}
			for _, p := range ServicePaths {
				if a := snap(t, w.path(p)); a != before[p] {
					t.Errorf("%s not as before:\n before %+v\n after  %+v", p, before[p], a)
				}
				if a := snap(t, w.path(p+backupSuffix)); a.exists {
					t.Errorf("backup left: %+v", a)
				}
			}
		})
	}
}

// TestBlockServicesRealTools runs Debian's own systemctl, service(8),
// invoke-rc.d and OpenRC's rc-service and openrc-run in a chroot of a
// Debian 12 tree (systemd, plus Debian's openrc packages unpacked) with the
// chroot's /proc and fresh /run, against two probe services whose start
// leaves a marker: nothing starts once BlockServices has run.
func TestBlockServicesRealTools(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: overlay, mounts, chroot")
	}
	var run *mounts.ChrootMount
	for _, m := range mounts.DefaultChrootMounts() {
		if m.Target == "/run" {
			run = &m
		}
	}
	if run == nil || run.FSType != "tmpfs" {
		t.Fatalf("the chroot's /run is %+v, not a fresh tmpfs: OpenRC's softlevel could reach the chroot", run)
	}
	dir := fixture.DebianOverlay(t)
	fixture.InstallDebs(t, dir, "openrc", "librc1", "libeinfo1")
	// An LSB script as a package ships it, and an OpenRC one.
	writeFile(t, filepath.Join(dir, "etc/init.d/ifprobe-lsb"), "#!/bin/sh\ncase \"$1\" in start) touch /started-lsb ;; esac\n", 0o755)
	writeFile(t, filepath.Join(dir, "etc/init.d/ifprobe"), "#!/sbin/openrc-run\nstart() { touch /started-openrc; }\n", 0o755)
	fixture.ChrootMounts(t, dir)
	started := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "started-*"))
		for _, p := range m {
			must(t, os.Remove(p))
		}
		return m
	}
	serviceBefore := snap(t, filepath.Join(dir, "usr/sbin/service"))

	// The hole: Debian's service(8) runs the init script itself in a chroot.
	if out, err := fixture.ChrootShell(dir, "service ifprobe-lsb start"); err != nil || len(started()) != 1 {
		t.Fatalf("without BlockServices, service(8) did not run the script (%v: %s): the test proves nothing", err, out)
	}

	root, err := inroot.Open(dir)
	must(t, err)
	defer root.Close()
	restore, did, err := BlockServices(root)
	must(t, err)
	want := []string{PolicyRcD + " (exit 101)", "/usr/sbin/service wrapped (no start, stop, restart or reload)",
		"systemctl offline (SYSTEMD_OFFLINE=1)", "OpenRC not booted (no " + OpenRCSoftlevel + ")"}
	if !reflect.DeepEqual(did, want) {
		t.Errorf("did = %q, want %q", did, want)
	}
	for _, tc := range []struct {
		cmd     string
		wantOut string // in the output; "" for none
		fails   bool
	}{
		{cmd: "service ifprobe-lsb start", wantOut: "not run in the build's chroot"},
		{cmd: "service ifprobe-lsb restart", wantOut: "not run in the build's chroot"},
		{cmd: "/sbin/service ifprobe-lsb start", wantOut: "not run in the build's chroot"},
		{cmd: "service ifprobe-lsb status"}, // passed to the image's service(8): the script ignores it
		{cmd: "invoke-rc.d ifprobe-lsb start"},
		// The communicator's SYSTEMD_OFFLINE=1: systemctl ignores start.
		{cmd: "SYSTEMD_OFFLINE=1 systemctl start ifprobe-lsb", wantOut: "Running in chroot, ignoring command 'start'"},
		{cmd: "rc-service ifprobe start", fails: true},
		{cmd: "/etc/init.d/ifprobe start", fails: true},
	} {
		out, err := fixture.ChrootShell(dir, tc.cmd)
		if (err != nil) != tc.fails {
			t.Errorf("%s: %v, want failure %v\n%s", tc.cmd, err, tc.fails, out)
		}
		if !strings.Contains(out, tc.wantOut) {
			t.Errorf("%s: output %q, want %q in it", tc.cmd, out, tc.wantOut)
		}
		if s := started(); len(s) > 0 {
			t.Errorf("%s started a service: %q", tc.cmd, s)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, OpenRCSoftlevel)); err == nil {
		t.Errorf("%s appeared in the chroot", OpenRCSoftlevel)
	}
	must(t, restore())
	if a := snap(t, filepath.Join(dir, "usr/sbin/service")); a != serviceBefore {
		t.Errorf("service(8) not restored:\n before %+v\n after  %+v", serviceBefore, a)
	}
}
