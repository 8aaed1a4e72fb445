package scrub_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// traces are what a factory leaves in an image: host keys, a machine-id,
// logs, a shell history.
const traces = `
  provisioner "shell" {
    inline = [
      "mkdir -p /etc/ssh /var/log",
      "echo secret > /etc/ssh/ssh_host_ed25519_key",
      "echo 0123456789abcdef0123456789abcdef > /etc/machine-id",
      "echo factory log > /var/log/syslog",
      "echo 'apt-get install secret-thing' > /root/.bash_history",
      "echo kept > /etc/factory-marker",
    ]
  }
`

// TestAccScrubChain: builder -> imagefactory-scrub -> imagefactory-sparsify
// in one packer build, on a raw and on a qcow2 artifact. The image keeps
// its content and loses the factory's traces; the report lists them.
// remove_paths takes /etc/os-release, which the builder's SBOM read: the
// scrub writes the SBOM again, prints the change, and sparsify copies the
// new one beside the qcow2.
func TestAccScrubChain(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			h := fixture.Packer(t)
			before := fixture.LeakSnapshot()
			state := filepath.Join(h.Base, "state")
			h.Env = append(h.Env, "IMAGEFACTORY_STATE_DIR="+state)
			disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
			res := h.Build(t, `
source "imagefactory" "t" {
  base_image       = "`+disk.Path+`"
  output_directory = "out"
  format           = "`+format+`"
}
build {
  sources = ["source.imagefactory.t"]
`+traces+`
  post-processors {
    post-processor "imagefactory-scrub" {
      operations   = ["defaults", "-tmp-files"]
      remove_paths = ["/etc/os-release"]
    }
    post-processor "imagefactory-sparsify" {
      format      = "qcow2"
      compression = "zstd"
      output      = "out/final.qcow2"
    }
  }
}
`, nil)
			if res.ExitCode != 0 {
				t.Fatalf("packer build failed (exit %d):\n%s", res.ExitCode, res.Output)
			}
			out := filepath.Join(h.Dir, "out")
			raw := filepath.Join(t.TempDir(), "final.raw")
			if b, err := exec.Command("qemu-img", "convert", "-O", "raw", filepath.Join(out, "final.qcow2"), raw).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v: %s", err, b)
			}
			root := disk.Root()
			if got := string(fixture.ReadFileFromPartition(t, raw, root, "/etc/machine-id")); got != "uninitialized\n" {
				t.Errorf("/etc/machine-id = %q, want \"uninitialized\\n\"", got)
			}
			if got := string(fixture.ReadFileFromPartition(t, raw, root, "/etc/factory-marker")); got != "kept\n" {
				t.Errorf("content lost: marker %q", got)
			}
			for _, gone := range []string{"/etc/ssh/ssh_host_ed25519_key", "/var/log/syslog", "/root/.bash_history"} {
				if fixture.FileExistsOnDisk(t, raw, root.Offset, gone) {
					t.Errorf("%s survived the scrub", gone)
				}
			}
			fixture.FsckPartition(t, raw, root)

			data, err := os.ReadFile(filepath.Join(out, "t.scrub.json"))
			if err != nil {
				t.Fatalf("no scrub report: %v", err)
			}
			var report struct {
				Changes []struct{ Op, Path, Action string }
			}
			if err := json.Unmarshal(data, &report); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, c := range report.Changes {
				seen[c.Op+" "+c.Path] = true
			}
			for _, want := range []string{"machine-id /etc/machine-id", "ssh-hostkeys /etc/ssh/ssh_host_ed25519_key", "bash-history /root/.bash_history"} {
				if !seen[want] {
					t.Errorf("the report lacks %q: %s", want, data)
				}
			}
			if !strings.Contains(res.Output, "machine-id") {
				t.Errorf("no summary in the build output:\n%s", res.Output)
			}
			if !strings.Contains(res.Output, "again: the scrub changed what it is read from") ||
				!strings.Contains(res.Output, "OS: Debian GNU/Linux 12 (bookworm) -> unknown") {
				t.Errorf("the scrub did not write the SBOM again or print the change:\n%s", res.Output)
			}
			var doc struct {
				Packages []struct {
					Name    string `json:"name"`
					Purpose string `json:"primaryPackagePurpose"`
				} `json:"packages"`
			}
			if b, err := os.ReadFile(filepath.Join(out, "final.qcow2.spdx.json")); err != nil || json.Unmarshal(b, &doc) != nil ||
				len(doc.Packages) == 0 || doc.Packages[0].Purpose != "OPERATING-SYSTEM" || doc.Packages[0].Name != "unknown" {
				t.Errorf("the final SBOM still names the OS whose os-release the scrub removed (%v): %+v", err, doc.Packages)
			}
			before.AssertNoLeaksUnder(t, h.OwnDirs()...)
			if j, _ := filepath.Glob(filepath.Join(state, "*.journal")); len(j) > 0 {
				t.Errorf("journals left: %v", j)
			}
		})
	}
}
