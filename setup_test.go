package main

// The README's set-up, checked as a newcomer meets it: Go's version is
// checked before make's first build, and the dependency script's package
// groups install on a minimal Debian 12 (a chroot of the cached tree of
// internal/fixture) without starting or enabling a service there.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// The message every failed check prints: what Go is needed and how to get
// it on Debian 12 through its backports and the Go module proxy.
var goAdvice = []string{
	`This project needs Go 1.26.0 or newer (go.mod says "go 1.26.0").`,
	"apt-get install -y -t bookworm-backports golang-1.23-go",
	"export PATH=/usr/lib/go-1.23/bin:$PATH GOTOOLCHAIN=go1.26.8",
}

func TestCheckGo(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "go")
	// Debian 12's golang-go answers so (go env GOVERSION, go version).
	if err := os.WriteFile(old, []byte("#!/bin/sh\n[ \"$1\" = env ] && echo go1.19.8 && exit 0\necho go version go1.19.8 linux/amd64\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, goBin string
		ok          bool
		first       string
	}{
		{"this host's go", "go", true, ""},
		{"Debian 12's golang-go", old, false, "Go too old: '" + old + "' is go1.19.8 (" + old + ")."},
		{"no go", filepath.Join(dir, "none"), false, "Go not found: no '" + filepath.Join(dir, "none") + "' on PATH."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("./scripts/check-go.sh")
			cmd.Env = append(os.Environ(), "GO="+tt.goBin)
			out, err := cmd.CombinedOutput()
			if (err == nil) != tt.ok {
				t.Fatalf("check-go.sh: %v, want ok=%v\n%s", err, tt.ok, out)
			}
			if tt.ok {
				if len(out) != 0 {
					t.Errorf("check-go.sh printed on success:\n%s", out)
				}
				return
			}
			lines := strings.Split(string(out), "\n")
			if lines[0] != tt.first {
				t.Errorf("first line %q, want %q", lines[0], tt.first)
			}
			for _, want := range goAdvice {
				if !strings.Contains(string(out), want) {
					t.Errorf("no %q in:\n%s", want, out)
				}
			}
		})
	}
}

// TestSetupOnDebian12 runs the README's set-up steps that need no build on
// a minimal Debian 12 chroot: the Go check's message where Go is missing,
// every package group of scripts/install-deps.sh resolved by apt-get
// --simulate, the README's Go (bookworm-backports' golang-1.23-go fetching
// go1.26.8 through the module proxy) passing the check, then the
// example's group installed for real plus cron (whose postinst enables and
// starts cron.service: the case the guard must stop), comparing
// `systemctl list-unit-files --state=enabled` before and after.
func TestSetupOnDebian12(t *testing.T) {
	if testing.Short() {
		t.Skip("installs the example's packages into a chroot (minutes)")
	}
	root := fixture.SetupChroot(t)
	repo, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(root, "src")
	for _, f := range []string{"go.mod", "scripts/check-go.sh", "scripts/install-deps.sh", "scripts/apt-install-quiet.sh"} {
		if out, err := exec.Command("install", "-D", filepath.Join(repo, f), filepath.Join(src, f)).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", f, err, out)
		}
	}

	t.Run("go check", func(t *testing.T) {
		out, err := fixture.InChroot(root, nil, "/src/scripts/check-go.sh")
		if err == nil {
			t.Fatalf("check-go.sh passed on a Debian 12 without Go:\n%s", out)
		}
		if !strings.HasPrefix(out, "Go not found: no 'go' on PATH.\n") {
			t.Errorf("first line wrong:\n%s", out)
		}
		for _, want := range goAdvice {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in:\n%s", want, out)
			}
		}
	})

	if out, err := fixture.InChroot(root, nil, "apt-get", "update", "-q"); err != nil {
		t.Skipf("the chroot's apt-get update fails: Debian's archive is not reachable from this host (%v)\n%s", err, tail(out))
	}
	for _, group := range []string{"runtime", "example", "test"} {
		t.Run("apt-get --simulate "+group, func(t *testing.T) {
			pkgs, err := fixture.InChroot(root, nil, "/src/scripts/install-deps.sh", "--list", group)
			if err != nil {
				t.Fatalf("--list %s: %v\n%s", group, err, pkgs)
			}
			out, err := fixture.InChroot(root, nil, append([]string{"apt-get", "install", "--simulate", "-q", "--no-install-recommends"}, strings.Fields(pkgs)...)...)
			if err != nil {
				t.Fatalf("group %s does not resolve on Debian 12: %v\n%s", group, err, tail(out))
			}
			if group == "example" && regexp.MustCompile(`(?m)^Inst (glance|python3-glance|keystone)`).MatchString(out) {
				t.Errorf("the example's group pulls OpenStack:\n%s", tail(out))
			}
		})
	}
	t.Run("the README's Go from bookworm-backports", func(t *testing.T) {
		uri := debianURI(t, root)
		list := filepath.Join(root, "etc/apt/sources.list.d/backports.list")
		if err := os.WriteFile(list, []byte("deb "+uri+" bookworm-backports main\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(list)
		if out, err := fixture.InChroot(root, nil, "apt-get", "update", "-q"); err != nil {
			t.Fatalf("apt-get update with backports: %v\n%s", err, tail(out))
		}
		out, err := fixture.InChroot(root, nil, "apt-get", "install", "-y", "-q", "--no-install-recommends", "-t", "bookworm-backports", "golang-1.23-go", "ca-certificates")
		if err != nil {
			t.Fatalf("golang-1.23-go, as the README says, does not install: %v\n%s", err, tail(out))
		}
		// The README's next step: that Go fetches go.mod's through the
		// module proxy, and the check passes. Go reads /proc/self/exe: /proc
		// is mounted in a private mount namespace that ends with the
		// command. TLS is trusted as on this host (its bundle may hold a
		// CA of its own: SSL_CERT_FILE).
		bundle := os.Getenv("SSL_CERT_FILE")
		if bundle == "" {
			bundle = "/etc/ssl/certs/ca-certificates.crt"
		}
		if data, err := os.ReadFile(bundle); err == nil {
			os.WriteFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"), data, 0o644)
		}
		script := `mount -t proc proc "$ROOT/proc" && chroot "$ROOT" env -i HOME=/root PATH=/usr/lib/go-1.23/bin:/usr/bin:/bin GOTOOLCHAIN=go1.26.8 sh -c 'cd /src && scripts/check-go.sh && go version'`
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
		cmd.Env = append(os.Environ(), "ROOT="+root)
		got, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(got), "go version go1.26.8 ") {
			t.Fatalf("the README's Go (golang-1.23-go, GOTOOLCHAIN=go1.26.8) does not pass scripts/check-go.sh: %v\n%s", err, got)
		}
	})

	t.Run("installing starts and enables no service", func(t *testing.T) {
		before := enabledUnits(t, root)
		pkgs, err := fixture.InChroot(root, nil, "/src/scripts/install-deps.sh", "--list", "example")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(repo, "scripts/apt-install-quiet.sh"), append(strings.Fields(pkgs), "cron")...)
		cmd.Env = append(os.Environ(), "ROOT="+root)
		out, err := cmd.CombinedOutput()
		defer killRootedIn(t, root)
		if err != nil {
			t.Fatalf("apt-install-quiet.sh: %v\n%s", err, tail(string(out)))
		}
		// cron's postinst did enable it (deb-systemd-helper's state), so
		// the comparison below can fail.
		if _, err := os.Stat(filepath.Join(root, "var/lib/systemd/deb-systemd-helper-enabled/cron.service.dsh-also")); err != nil {
			t.Fatalf("cron's postinst enabled nothing, the test proves nothing: %v", err)
		}
		after := enabledUnits(t, root)
		if before != after {
			t.Errorf("enabled unit files changed by the install:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if pids := rootedIn(t, root); len(pids) > 0 {
			t.Errorf("processes started in the chroot by the install: %v", pids)
		}
		if _, err := os.Lstat(filepath.Join(root, "usr/sbin/policy-rc.d")); err == nil {
			t.Error("the install left its policy-rc.d")
		}
	})
}

// enabledUnits is `systemctl --root ROOT list-unit-files --state=enabled`.
func enabledUnits(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("systemctl", "--root="+root, "list-unit-files", "--state=enabled", "--no-legend").CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl list-unit-files: %v\n%s", err, out)
	}
	return string(out)
}

// debianURI is the archive URI of the chroot's Debian sources (deb822 or
// one-line form), the one the README tells to add backports beside.
func debianURI(t *testing.T, root string) string {
	t.Helper()
	for _, f := range []string{"etc/apt/sources.list.d/debian.sources", "etc/apt/sources.list"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		if m := regexp.MustCompile(`(?m)^URIs:\s*(\S+)`).FindSubmatch(data); m != nil {
			return string(m[1])
		}
		if m := regexp.MustCompile(`(?m)^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s`).FindSubmatch(data); m != nil {
			return string(m[1])
		}
	}
	t.Fatal("no Debian URI in the chroot's apt sources")
	return ""
}

// rootedIn lists the processes whose root directory is root.
func rootedIn(t *testing.T, root string) []string {
	t.Helper()
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if r, err := os.Readlink(d + "/root"); err == nil && r == root {
			pids = append(pids, filepath.Base(d))
		}
	}
	return pids
}

// killRootedIn ends what the install may have started in the chroot (the
// test's own processes), so a failure leaves nothing running.
func killRootedIn(t *testing.T, root string) {
	for _, pid := range rootedIn(t, root) {
		exec.Command("kill", "-9", pid).Run()
	}
}

func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
