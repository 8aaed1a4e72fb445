package elements

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// alpineElements writes two elements: alpine-sh, whose environment.d and
// install.d scripts are POSIX sh and which calls the provisioner's helpers
// (dib-run-parts, pkg-map, dib-init-system) in the image; and needs-bash,
// a #!/bin/bash script as most of DIB's own.
func alpineElements(t *testing.T) string {
	dir := t.TempDir()
	files := map[string]string{
		"alpine-sh/environment.d/10-alp": "export ALP_ENV=from-envd\n",
		"alpine-sh/install.d/50-sh": `#!/bin/sh
set -eu
mkdir -p /root/parts
printf '#!/bin/sh\necho part-b >> /root/parts.log\n' > /root/parts/20-b
printf '#!/bin/sh\necho part-a >> /root/parts.log\n' > /root/parts/10-a
chmod +x /root/parts/10-a /root/parts/20-b
dib-run-parts /root/parts 2>/root/parts.err
echo "$DISTRO_NAME $DIB_RELEASE $(dib-init-system) $ALP_ENV $(pkg-map --element alpine-sh --missing-ok tool)" > /root/alpine-sh.out
`,
		"needs-bash/install.d/50-bashism": "#!/bin/bash\nset -eu\necho ${BASH_VERSION}\n",
	}
	for p, content := range files {
		hp := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hp, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestProvisionAlpineChroot runs the provisioner in a chroot of the
// Alpine-like tree (busybox ash as /bin/sh, no bash, OpenRC).
func TestProvisionAlpineChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chroot and bind mounts")
	}
	tree := t.TempDir()
	fixture.AlpineTree(t, tree, fixture.AlpineOptions{})
	elements := alpineElements(t)
	before := fixture.LeakSnapshot()

	out, err := chrootRun(t, tree, true, map[string]interface{}{
		"elements": []string{"alpine-sh"}, "elements_path": []string{elements},
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got := readTree(t, tree, "root/alpine-sh.out"); got != "alpine 3.20.3 openrc from-envd tool\n" {
		t.Errorf("/root/alpine-sh.out = %q", got)
	}
	if got := readTree(t, tree, "root/parts.log"); got != "part-a\npart-b\n" {
		t.Errorf("dib-run-parts ran %q", got)
	}
	if got := readTree(t, tree, "root/parts.err"); !strings.Contains(got, "PROFILING") {
		t.Errorf("dib-run-parts' timings missing: %q", got)
	}
	assertClean(t, before, tree)

	out, err = chrootRun(t, tree, true, map[string]interface{}{
		"elements": []string{"needs-bash"}, "elements_path": []string{elements},
	})
	want := "element needs-bash, phase install.d, script 50-bashism: its interpreter #!/bin/bash is not in the image"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q\n%s", err, want, out)
	}
	assertClean(t, before, tree)
}
