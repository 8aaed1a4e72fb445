package boottest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// The console scanner finds the lines after which a boot cannot succeed
// (as SeaBIOS, OVMF, GRUB, the kernel and the initramfs print them), and
// getty's login prompt, also across writes that split a line, and never
// reports what it already read.
func TestConsoleScanner(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		prompt bool
		fatal  string // substring of the fatal report, "" for none
	}{
		{"seabios", []string{"SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from Hard Disk...\r\nBoot failed: not a bootable disk\r\n\r\nNo bootable device.\r\n"}, false, "the firmware found no boot loader on the disk"},
		{"grub without kernel", []string{"\x1b[H\x1b[Jerror: file `/boot/vmlinuz-6.1.0-28-amd64' not ", "found.\r\nerror: you need to load the kernel first.\r\n"}, false, "the boot loader found no kernel: error: file `/boot/vmlinuz-6.1.0-28-amd64' not found."},
		{"kernel panic", []string{"[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"}, false, "the kernel panicked"},
		{"initramfs", []string{"Gave up waiting for root file system device.  Common problems:\n"}, false, "the initramfs did not find the root filesystem"},
		{"login prompt", []string{"Debian GNU/Linux 12 localhost ttyS0\r\n\r\nlocalhost login: "}, true, ""},
		{"prompt split", []string{"Debian GNU/Linux 12 localhost ttyS0\r\n\r\nlocalhost lo", "gin: "}, true, ""},
		{"no prompt in a message", []string{"[  OK  ] Reached target getty.target - Login Prompts.\n"}, false, ""},
		{"a module error is not fatal", []string{"error: file `/boot/grub/i386-pc/gfxterm.mod' not found.\n"}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "console.log")
			s := newConsoleScanner(path)
			if p, f := s.scan(); p || f != "" {
				t.Fatalf("a missing console: prompt %v, fatal %q", p, f)
			}
			var prompt bool
			var fatal string
			for _, c := range tc.chunks {
				f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteString(c)
				f.Close()
				p, fl := s.scan()
				prompt = prompt || p
				if fatal == "" {
					fatal = fl
				}
			}
			if prompt != tc.prompt || (tc.fatal == "") != (fatal == "") || !strings.Contains(fatal, tc.fatal) {
				t.Errorf("prompt %v, fatal %q; want %v, %q", prompt, fatal, tc.prompt, tc.fatal)
			}
		})
	}
}

// An HTTP wait is met only by the expected status and body; what it saw
// last says why not.
func TestTryHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			fmt.Fprintf(w, "hello from %s", r.Host)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	hp := srv.Listener.Addr().(*net.TCPAddr).Port
	run := &run{o: Options{Log: func(string) {}}}
	w := &wait{name: "http"}
	for _, tc := range []struct {
		url      string
		status   int
		contains string
		ok       bool
		last     string
	}{
		{"http://www.example.test/ok", 200, "from www.example.test", true, ""},
		{"http://www.example.test/ok", 0, "", true, ""},
		{"http://www.example.test/ok", 200, "goodbye", false, `status 200, but the body (27 bytes) lacks "goodbye"`},
		{"http://localhost/missing", 200, "", false, "status 404, want 200"},
		{"http://localhost/moved", 302, "", true, ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		h := HTTPCheck{URL: tc.url, Status: tc.status, BodyContains: tc.contains}
		run.start = time.Now()
		done := make(chan struct{})
		go func() { run.waitHTTP(ctx, w, h, hp); close(done) }()
		if tc.ok {
			<-done
		} else {
			time.Sleep(500 * time.Millisecond)
			cancel()
			<-done
		}
		cancel()
		if (w.met != 0) != tc.ok || !tc.ok && w.last != tc.last {
			t.Errorf("%s status %d %q: met %v, last %q; want %v, %q", tc.url, tc.status, tc.contains, w.met, w.last, tc.ok, tc.last)
		}
		*w = wait{name: "http"}
	}
}

// The guest ports to forward: the HTTP URLs' (by scheme or explicit), the
// TCP ports and the extra ones, once each, without SSH's own.
func TestGuestPorts(t *testing.T) {
	o := Options{
		SSH:          true,
		TCPPorts:     []int{5432, 80},
		HTTP:         []HTTPCheck{{URL: "http://localhost/"}, {URL: "https://example.test/"}, {URL: "http://localhost:8080/x"}},
		ForwardPorts: []int{22, 9000},
	}
	got, err := o.guestPorts()
	if err != nil || fmt.Sprint(got) != "[80 443 5432 8080 9000]" {
		t.Errorf("guestPorts = %v, %v", got, err)
	}
}

// Factory keys files add their keys; a file without one is an error that
// names it.
func TestReadFactoryKeys(t *testing.T) {
	dir := t.TempDir()
	k1, _ := qemu.NewKey("one")
	k2, _ := qemu.NewKey("two")
	both := filepath.Join(dir, "both.pub")
	os.WriteFile(both, []byte(k1.AuthorizedKey+"\n"+k2.AuthorizedKey+"\n"), 0o644)
	empty := filepath.Join(dir, "empty.pub")
	os.WriteFile(empty, []byte("\n"), 0o644)
	keys := map[string]string{}
	if err := readFactoryKeys(keys, []string{both}); err != nil || len(keys) != 2 {
		t.Fatalf("readFactoryKeys = %v, %d keys", err, len(keys))
	}
	pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(k2.AuthorizedKey))
	if keys[string(pub.Marshal())] != both {
		t.Errorf("the second key is not recorded from %s: %v", both, keys)
	}
	if err := readFactoryKeys(keys, []string{empty}); err == nil || !strings.Contains(err.Error(), empty+" holds no SSH public key") {
		t.Errorf("an empty file: %v", err)
	}
}
