package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// TestProvideDNS: an image without a resolver gets QEMU's for the boot and
// its own file back after it, whatever the boot wrote there; an image
// with a resolver of its own (a nameserver, a symlink to
// systemd-resolved's) is not touched.
func TestProvideDNS(t *testing.T) {
	const stub = "../run/systemd/resolve/stub-resolv.conf"
	for _, tc := range []struct {
		name      string
		before    *string // nil: no resolv.conf
		link      bool    // resolv.conf is a symlink to stub
		wantWrite bool
		bootWrite string // what the boot leaves in it ("" = nothing)
		want      scrub.Action
	}{
		{"empty file", ptr(""), false, true, "", scrub.Changed},
		{"comments only", ptr("# no servers\nsearch lan\n"), false, true, "nameserver 10.0.2.3\nsearch lan\n", scrub.Changed},
		{"missing", nil, false, true, "", scrub.Removed},
		{"a nameserver of its own", ptr("nameserver 192.0.2.53\n"), false, false, "", ""},
		{"symlink to systemd-resolved", nil, true, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
			os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
			conf := filepath.Join(dir, "etc/resolv.conf")
			switch {
			case tc.link:
				os.Symlink(stub, conf)
			case tc.before != nil:
				os.WriteFile(conf, []byte(*tc.before), 0o640)
			}
			root, g := inspectDir(t, dir, "root", "ssh-ed25519 AAAA build")
			wrote, err := g.ProvideDNS(root)
			if err != nil || wrote != tc.wantWrite {
				t.Fatalf("ProvideDNS = %v, %v; want %v", wrote, err, tc.wantWrite)
			}
			if got, _ := os.ReadFile(conf); wrote && !strings.Contains(string(got), "nameserver "+UserNetDNS+"\n") {
				t.Errorf("resolv.conf for the boot = %q", got)
			}
			if tc.bootWrite != "" {
				os.WriteFile(conf, []byte(tc.bootWrite), 0o644)
			}
			rep, err := g.Undo(context.Background(), root, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			var got scrub.Action
			for _, c := range rep.Changes {
				if c.Path == resolvConf {
					got = c.Action
				}
			}
			if got != tc.want {
				t.Errorf("report for %s: %q, want %q (%+v)", resolvConf, got, tc.want, rep.Changes)
			}
			fi, err := os.Lstat(conf)
			switch {
			case tc.link:
				if target, _ := os.Readlink(conf); target != stub {
					t.Errorf("the symlink now points to %q", target)
				}
			case tc.before == nil:
				if err == nil {
					t.Errorf("resolv.conf left behind in an image that had none")
				}
			default:
				if b, _ := os.ReadFile(conf); string(b) != *tc.before || fi.Mode().Perm() != 0o640 {
					t.Errorf("resolv.conf after = %q mode %v; want %q 0640", b, fi.Mode(), *tc.before)
				}
			}
		})
	}
}

func ptr(s string) *string { return &s }
