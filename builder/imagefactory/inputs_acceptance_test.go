package imagefactory_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// allocatedBytes is what a file occupies on its filesystem (st_blocks).
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestAccCompressedInputs: an xz and a zstd raw base image of 1 GiB
// holding a few MB cost their data, not their virtual size: the working
// disk (measured by a shell-local provisioner while the build runs) and
// the artifact allocate within 1 % of the raw input's data, Packer's cache
// stays empty (the base is local), and a qcow2_compat = "0.10" artifact is
// one qemu-img info reports as compat 0.10.
func TestAccCompressedInputs(t *testing.T) {
	// 1 GiB holding about 19 MB, as in the issue: 16 MiB of it one file.
	disk := fixture.NewDisk(t, fixture.DiskOptions{Size: 1 << 30, Tree: func(root string) {
		b := make([]byte, 16<<20)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(root, "srv-data"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}})
	data := allocatedBytes(t, disk.Path)
	for _, kind := range []string{"xz", "zst"} {
		t.Run(kind, func(t *testing.T) {
			a := newAcc(t)
			base := fixture.Compress(t, disk.Path, kind)
			probe := filepath.Join(t.TempDir(), "working-disk")
			// Measured before anything is mounted: the build's own writes
			// come after.
			mustBuild(t, a, template(fmt.Sprintf(`  pre_mount_commands = ["stat -c '%%b %%B %%s' {{.DiskPath}} > %s"]`, probe), fmt.Sprintf(`
  provisioner "shell" { inline = ["echo %s > /etc/factory-marker"] }
`, kind)), map[string]string{"base": base})

			var blocks, unit, size int64
			if b, err := os.ReadFile(probe); err != nil {
				t.Fatal(err)
			} else if _, err := fmt.Sscan(string(b), &blocks, &unit, &size); err != nil {
				t.Fatalf("probe %q: %v", b, err)
			}
			limit := data + data/100
			if work := blocks * unit; size != 1<<30 || work > limit {
				t.Errorf("working disk: %d bytes allocated of %d; the raw input holds %d bytes of data (limit %d)", work, size, data, limit)
			}
			// The artifact: that, plus what mounting and provisioning
			// wrote (the marker, the journal's blocks, resolv.conf...).
			img := filepath.Join(a.out(), "t.raw")
			t.Logf("%s: raw input %d bytes of data; working disk %d allocated; artifact %d allocated", kind, data, blocks*unit, allocatedBytes(t, img))
			if got := allocatedBytes(t, img); got > limit+1<<20 {
				t.Errorf("artifact: %d bytes allocated; the raw input holds %d bytes of data (limit %d + 1 MiB the build writes)", got, data, limit)
			}
			if got := readOut(t, img, disk.Root(), "/etc/factory-marker"); got != kind+"\n" {
				t.Errorf("marker: %q", got)
			}
			if n := cacheFiles(t, a); len(n) != 0 {
				t.Errorf("Packer's cache holds %v for a local base image", n)
			}
			a.assertNoLeaks(t)
		})
	}

	t.Run("qcow2_compat-0.10", func(t *testing.T) {
		a := newAcc(t)
		mustBuild(t, a, template(`  format = "qcow2"
  qcow2_compat = "0.10"`, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": disk.Path})
		if got := fixture.QCOW2Compat(t, filepath.Join(a.out(), "t.qcow2")); got != "0.10" {
			t.Errorf("qemu-img info: compat %q, want 0.10", got)
		}
		a.assertNoLeaks(t)
	})
}

// cacheFiles lists the files in the harness's Packer cache.
func cacheFiles(t *testing.T, a *acc) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(filepath.Join(a.Base, "cache"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	return names
}

// TestAccInputMessages: the messages a user sees for bad inputs name what
// the user gave. packer validate refuses a missing local base_image and
// source_rootfs and an unreadable elements_path entry; a disk_size
// smaller than a compressed base image is refused from its xz index,
// before it is decompressed; a base image that is not a disk is named,
// not its working copy.
func TestAccInputMessages(t *testing.T) {
	a := newAcc(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "nothing-here.img")
	noElements := filepath.Join(dir, "no-elements")
	validate := func(source, build string) fixture.Result {
		t.Helper()
		tmpl := filepath.Join(a.Dir, "validate.pkr.hcl")
		if err := os.WriteFile(tmpl, []byte(fixture.RequiredPlugins+`
source "imagefactory" "t" {
`+source+`
}
build {
  sources = ["source.imagefactory.t"]
`+build+`
}
`), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := a.Command("validate", tmpl).CombinedOutput()
		code := 0
		if err != nil {
			code = 1
		}
		// Packer wraps its diagnostics at 80 columns.
		return fixture.Result{ExitCode: code, Output: strings.Join(strings.Fields(string(out)), " ")}
	}
	for _, c := range []struct{ name, source, build, want string }{
		{"missing base_image", `base_image = "` + missing + `"`, ``,
			"base_image " + missing + " does not exist"},
		{"missing source_rootfs", `source_rootfs = "` + missing + `"`, ``,
			"source_rootfs " + missing + " does not exist"},
		{"unreadable elements_path", `base_image = "` + fixture.NotADisk(t) + `"`,
			`provisioner "imagefactory-elements" {
    elements      = ["base"]
    elements_path = ["` + noElements + `"]
  }`,
			"elements_path[0] " + noElements + " cannot be read (no such file or directory)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := validate(c.source, c.build)
			if res.ExitCode == 0 || !strings.Contains(res.Output, c.want) {
				t.Errorf("packer validate: exit %d, want a refusal saying %q:\n%s", res.ExitCode, c.want, res.Output)
			}
		})
	}

	t.Run("disk_size smaller than an xz image", func(t *testing.T) {
		disk := fixture.NewDisk(t, fixture.DiskOptions{})
		base := fixture.Compress(t, disk.Path, "xz")
		res := a.Build(t, template(`  disk_size = "100M"`, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": base})
		want := fmt.Sprintf("disk_size 100M is smaller than base_image %s, whose virtual size is %s (%d bytes, from its xz index)", base, diskimage.FormatSize(disk.Size), disk.Size)
		if res.ExitCode == 0 || !strings.Contains(res.Output, want) {
			t.Errorf("exit %d, want %q:\n%s", res.ExitCode, want, res.Output)
		}
		if strings.Contains(res.Output, "Decompressing") {
			t.Errorf("the image was decompressed before the refusal:\n%s", res.Output)
		}
		a.assertNoLeaks(t)
	})
	t.Run("not a disk", func(t *testing.T) {
		base := fixture.NotADisk(t)
		res := a.Build(t, template(``, `provisioner "shell" { inline = ["true"] }`), map[string]string{"base": base})
		want := "base_image " + base + " is not a disk image"
		if res.ExitCode == 0 || !strings.Contains(res.Output, want) || strings.Contains(res.Output, ".work.raw is not") {
			t.Errorf("exit %d, want %q and no working file named:\n%s", res.ExitCode, want, res.Output)
		}
		a.assertNoLeaks(t)
	})
}
