package session

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestMoveAside: the image's /etc/ld.so.preload, here a symlink aiming at
// a host file, is moved aside as the symlink itself and put back the same;
// the host file is never touched. A file already at the aside name is
// refused, and an image without the file moves nothing.
func TestMoveAside(t *testing.T) {
	host := filepath.Join(t.TempDir(), "host-preload")
	if err := os.WriteFile(host, []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := fixture.NewDisk(t, fixture.DiskOptions{Tree: func(dir string) {
		os.Symlink("/../../../.."+host, filepath.Join(dir, "etc/ld.so.preload"))
		os.WriteFile(filepath.Join(dir, "etc/other.imagefactory-orig"), nil, 0o644)
	}})
	s := newEnv(t, d.Path).mountRoot(t)
	restore, moved, err := s.MoveAside("/etc/ld.so.preload")
	if err != nil || !moved {
		t.Fatalf("MoveAside = %v, %v", moved, err)
	}
	if _, err := s.RootFS().Lstat("/etc/ld.so.preload"); err == nil {
		t.Error("/etc/ld.so.preload still in place during the session")
	}
	if target, err := s.RootFS().Readlink("/etc/ld.so.preload.imagefactory-orig"); err != nil || !strings.HasSuffix(target, host) {
		t.Errorf("the symlink was not moved as such: %q %v", target, err)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if err := restore(); err != nil {
		t.Errorf("a second restore: %v", err)
	}
	if target, err := s.RootFS().Readlink("/etc/ld.so.preload"); err != nil || target != "/../../../.."+host {
		t.Errorf("put back as %q (%v)", target, err)
	}
	if b, err := os.ReadFile(host); err != nil || string(b) != "host\n" {
		t.Errorf("the host file changed: %q %v", b, err)
	}
	if _, _, err := s.MoveAside("/etc/other"); err != nil {
		t.Errorf("an image without /etc/other: %v", err)
	}
	os.WriteFile(filepath.Join(s.MountPath(), "etc/other"), nil, 0o644)
	if _, _, err := s.MoveAside("/etc/other"); err == nil || !strings.Contains(err.Error(), "already exists in the image") {
		t.Errorf("MoveAside over an existing aside file = %v", err)
	}
	if _, moved, err := s.MoveAside("/etc/missing"); moved || err != nil {
		t.Errorf("a missing file: moved %v, %v", moved, err)
	}
}
