package imagefactory

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

func TestKeptMessage(t *testing.T) {
	mnt := "/run/imagefactory/mnt/t-ABC"
	kept := []cleanup.Entry{
		cleanup.FileEntry("/out/.t.work.raw"),
		cleanup.LoopEntry("/dev/loop3", "/out/.t.work.raw", 12, 1048576),
		{Kind: cleanup.KindMount, Path: mnt, Source: "/dev/loop3", FSType: "ext4"},
		{Kind: cleanup.KindMount, Path: mnt + "/boot", Source: "/dev/loop4", FSType: "ext4"},
		{Kind: cleanup.KindChroot, Path: mnt},
	}
	cmd := "/p/packer-plugin-imagefactory reap --journal /run/imagefactory/1-a.journal"
	msg := keptMessage(kept, []cleanup.Entry{{Kind: cleanup.KindDir, Path: "/out"}}, mnt, cmd)
	for _, want := range []string{
		"-on-error=abort",
		"root filesystem is mounted at " + mnt + " (look inside: chroot " + mnt + " /bin/sh)",
		"mounted: " + mnt + "/boot (ext4 /dev/loop4)",
		"loop device: /dev/loop3 (backing /out/.t.work.raw, offset 1048576)",
		"processes rooted in " + mnt,
		"output directory: /out",
		"\n  " + cmd + "\n",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	// Without the root mount (a qemu build, a failure before the mount)
	// the message names no mount path.
	if msg := keptMessage(kept[:2], nil, mnt, cmd); strings.Contains(msg, "mounted at") {
		t.Errorf("message names a mount that is not held:\n%s", msg)
	}
}

func TestKeptClash(t *testing.T) {
	k := cleanup.Kept{
		Mounts: []string{"/run/imagefactory/mnt/t-ABC", "/run/imagefactory/mnt/t-ABC/boot"},
		Files:  []string{"/work/out/.t.work.raw", "/run/imagefactory/mnt/t-ABC", "/work/out"},
	}
	for _, c := range []struct{ out, mnt, want string }{
		{"/work/out2", "/run/imagefactory/mnt/t-DEF", ""},
		{"/work/out", "/run/imagefactory/mnt/t-DEF", "output directory /work/out"},
		{"/work/out2", "/run/imagefactory/mnt/t-ABC", "mount_path /run/imagefactory/mnt/t-ABC"},
		{"/work/out2", "/run/imagefactory/mnt/t-ABC/boot/x", "mount_path"},
		{"/work/out2", "/run/imagefactory/mnt", "mount_path"},
		{"/work/ou", "/run/imagefactory/mnt/t-AB", ""},
		{"", "", ""},
	} {
		if got := keptClash(k, c.out, c.mnt); (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("keptClash(%s, %s) = %q, want %q", c.out, c.mnt, got, c.want)
		}
	}
}

// fakeStep records its cleanup; it halts, panics or continues.
type fakeStep struct {
	do      string // "", "halt" or "panic"
	cleaned *[]string
	name    string
}

func (s fakeStep) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	switch s.do {
	case "halt":
		return halt(state, errors.New("provisioner failed"))
	case "panic":
		panic("boom")
	}
	return multistep.ActionContinue
}

func (s fakeStep) Cleanup(multistep.StateBag) { *s.cleaned = append(*s.cleaned, s.name) }

// Under -on-error=abort the cleanups of a failed build are skipped, the
// SDK's messages name the real step (guards sit outside its wrappers), and
// a panic still halts the build; the default runs every cleanup.
func TestGuardedRunnerOnError(t *testing.T) {
	for _, c := range []struct {
		onError, fail string
		cleaned       string
	}{
		{"abort", "halt", ""},
		{"abort", "panic", ""},
		{"cleanup", "halt", "last,first"},
		{"", "panic", "last,first"},
		{"abort", "", "last,first"}, // a build that succeeds cleans up
	} {
		var cleaned []string
		var out bytes.Buffer
		ui := &packersdk.BasicUi{Reader: strings.NewReader(""), Writer: &out, ErrorWriter: &out}
		state := new(multistep.BasicStateBag)
		state.Put("ui", ui)
		steps := []multistep.Step{fakeStep{name: "first", cleaned: &cleaned}, fakeStep{name: "last", do: c.fail, cleaned: &cleaned}}
		r := newGuardedRunner(steps, common.PackerConfig{PackerOnError: c.onError}, ui)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r.Run(ctx, state)
		cancel()
		if got := strings.Join(cleaned, ","); got != c.cleaned {
			t.Errorf("-on-error=%s, %s: cleanups %q, want %q", c.onError, c.fail, got, c.cleaned)
		}
		if _, failed := state.GetOk("error"); failed != (c.fail != "") {
			t.Errorf("-on-error=%s, %s: error set = %v", c.onError, c.fail, failed)
		}
		if c.onError == "abort" && c.fail != "" && (!strings.Contains(out.String(), `"fakeStep"`) || strings.Contains(out.String(), "guarded")) {
			t.Errorf("-on-error=abort: the output does not name the step:\n%s", out.String())
		}
	}
}
