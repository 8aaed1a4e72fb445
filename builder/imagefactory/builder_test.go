package imagefactory

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// newBuilder prepares a builder on a fixture disk, with its journals in a
// private state directory.
func newBuilder(t *testing.T, disk string, extra map[string]interface{}) (*Builder, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the builder attaches loop devices and mounts filesystems: run as root")
	}
	dir := t.TempDir()
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(dir, "state"))
	raw := map[string]interface{}{
		"packer_build_name": "unit",
		"base_image":        disk,
		"output_directory":  filepath.Join(dir, "out"),
		"mount_path":        filepath.Join(dir, "mnt"),
	}
	for k, v := range extra {
		raw[k] = v
	}
	b := &Builder{}
	if _, _, err := b.Prepare(raw); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return b, dir
}

// TestRunPanicReleasesEverything: a panic in the middle of provisioning
// (here from the hook, where provisioners run) unwinds through every step's
// cleanup: Run reports it as an error, and no loop device, mount, journal
// or half-made image is left.
func TestRunPanicReleasesEverything(t *testing.T) {
	disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
	before := fixture.LeakSnapshot()
	b, dir := newBuilder(t, disk.Path, nil)

	hook := &packersdk.MockHook{RunFunc: func(context.Context) error {
		if _, err := os.Stat(filepath.Join(dir, "mnt", "boot", fixture.BootMarkerFile)); err != nil {
			t.Errorf("the image was not mounted when provisioning started: %v", err)
		}
		panic("a provisioner bug")
	}}
	art, err := b.Run(context.Background(), packersdk.TestUi(t), hook)
	if err == nil || !strings.Contains(err.Error(), "panicked") || !strings.Contains(err.Error(), "a provisioner bug") {
		t.Fatalf("Run after a panic: artifact %v, error %v", art, err)
	}
	if !hook.RunCalled {
		t.Fatal("the hook never ran")
	}
	before.AssertNoLeaksUnder(t, dir)
	if j, _ := filepath.Glob(filepath.Join(dir, "state", "*.journal")); len(j) > 0 {
		t.Errorf("journals left: %v", j)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Errorf("output directory left after a panic: %v", err)
	}
}

// TestArtifact checks the artifact of a real build: the file, its format
// and size, the HCP Packer registry metadata, and Destroy.
func TestArtifact(t *testing.T) {
	disk := fixture.NewDisk(t, fixture.DiskOptions{})
	b, dir := newBuilder(t, disk.Path, map[string]interface{}{"format": "qcow2"})
	art, err := b.Run(context.Background(), packersdk.TestUi(t), &packersdk.MockHook{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := filepath.Join(dir, "out", "unit.qcow2")
	if files := art.Files(); len(files) != 2 || files[0] != want || files[1] != want+".spdx.json" || art.Id() != want {
		t.Errorf("Files %v, Id %q; want %s and its SBOM", files, art.Id(), want)
	}
	if art.BuilderId() != BuilderID {
		t.Errorf("BuilderId %q", art.BuilderId())
	}
	if art.State("image_format") != "qcow2" || art.State("image_size") != disk.Size {
		t.Errorf("image_format %v, image_size %v; want qcow2, %d", art.State("image_format"), art.State("image_size"), disk.Size)
	}
	img, ok := art.State(registryimage.ArtifactStateURI).(*registryimage.Image)
	if !ok {
		t.Fatalf("no HCP Packer registry metadata: %#v", art.State(registryimage.ArtifactStateURI))
	}
	if img.ProviderName != "imagefactory" || img.ImageID != want || img.SourceImageID != disk.Path ||
		img.Labels["format"] != "qcow2" || img.Labels["base_format"] != "raw" {
		t.Errorf("registry metadata: %+v", img)
	}
	if err := img.Validate(); err != nil {
		t.Errorf("registry metadata does not validate: %v", err)
	}
	if got, sum := img.Labels["sbom_sha256"], fixture.Sha256(t, want+".spdx.json"); got != sum {
		t.Errorf("label sbom_sha256 %q, the SBOM's sha256 %s", got, sum)
	}
	for _, k := range []string{"os", "os_version", "kernel", "package_count"} {
		if _, ok := img.Labels[k]; !ok {
			t.Errorf("registry metadata lacks the label %s: %v", k, img.Labels)
		}
	}
	gd, _ := art.State("generated_data").(map[string]interface{})
	for _, k := range generatedDataKeys {
		if _, ok := gd[k]; !ok {
			t.Errorf("generated data lacks %s: %v", k, gd)
		}
	}
	if err := art.Destroy(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{want, want + ".spdx.json"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("Destroy left %s: %v", f, err)
		}
	}
}

// panicUi panics when a step says a given message: a panic in a step, on
// the goroutine running the steps.
type panicUi struct {
	packersdk.Ui
	on string
}

func (u panicUi) Say(msg string) {
	if strings.Contains(msg, u.on) {
		panic("a step bug")
	}
	u.Ui.Say(msg)
}

// TestRunStepPanicReleasesEverything: a panic in a step unwinds through the
// cleanups of the steps before it; Run reports it and nothing is left.
func TestRunStepPanicReleasesEverything(t *testing.T) {
	disk := fixture.NewDisk(t, fixture.DiskOptions{SeparateBoot: true})
	before := fixture.LeakSnapshot()
	b, dir := newBuilder(t, disk.Path, nil)
	// Said by the chroot mounts step, when everything is mounted.
	ui := panicUi{Ui: packersdk.TestUi(t), on: "Chroot mounts"}
	art, err := b.Run(context.Background(), ui, &packersdk.MockHook{})
	if err == nil || !strings.Contains(err.Error(), "panicked") || !strings.Contains(err.Error(), "a step bug") {
		t.Fatalf("Run after a panic: artifact %v, error %v", art, err)
	}
	before.AssertNoLeaksUnder(t, dir)
	if j, _ := filepath.Glob(filepath.Join(dir, "state", "*.journal")); len(j) > 0 {
		t.Errorf("journals left: %v", j)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Errorf("output directory left after a panic: %v", err)
	}
}

// TestRunWithoutHostResolvConf: a host without /etc/resolv.conf (some
// containers) still builds in the default copy mode; the image keeps its
// own file.
func TestRunWithoutHostResolvConf(t *testing.T) {
	disk := fixture.NewDisk(t, fixture.DiskOptions{})
	b, dir := newBuilder(t, disk.Path, nil)
	old := hostResolvConf
	hostResolvConf = filepath.Join(dir, "no-resolv.conf")
	t.Cleanup(func() { hostResolvConf = old })

	var seen []byte
	hook := &packersdk.MockHook{RunFunc: func(context.Context) error {
		var err error
		seen, err = os.ReadFile(filepath.Join(dir, "mnt", "etc/resolv.conf"))
		return err
	}}
	art, err := b.Run(context.Background(), packersdk.TestUi(t), hook)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	defer art.Destroy()
	if !strings.Contains(string(seen), fixture.ResolvConfMarker) {
		t.Errorf("during the build /etc/resolv.conf was %q; want the image's own", seen)
	}
}
