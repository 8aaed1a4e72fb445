package packerglue

import (
	"fmt"
	"os"
	"strings"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// OpenJournal opens a cleanup journal in the shared state directory for a
// post-processor's run. The returned close releases whatever the run still
// holds and reports a failure to the UI; call it deferred.
func OpenJournal(ui packersdk.Ui, component, label string) (*cleanup.Journal, func(), error) {
	j, err := cleanup.Open(cleanup.DefaultStateDir(), component+" "+label)
	if err != nil {
		return nil, nil, err
	}
	return j, func() {
		if err := j.Close(); err != nil {
			ui.Error(fmt.Sprintf("releasing what %s held: %v", component, err))
		}
	}, nil
}

// ReapDead releases what killed builds left in the shared state directory
// (their QEMU, overlays, loop devices, mounts) and says so; a failure is a
// warning: those are not this run's resources, and the next run tries again.
func ReapDead(ui packersdk.Ui) {
	report, err := cleanup.Reap(cleanup.DefaultStateDir())
	if len(report.Released) > 0 {
		ui.Say("Released what an earlier, killed build left behind:\n  " + strings.Join(report.Released, "\n  "))
	}
	if err != nil {
		ui.Error(fmt.Sprintf("Warning: could not release everything an earlier build left behind (tried again next build): %v", err))
	}
}

// RefuseReadOnly fails when path has no write permission bits: the user
// marked it as not to be changed, and root would change it anyway.
func RefuseReadOnly(component, path, why string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o222 == 0 {
		return fmt.Errorf("%s: %s is read-only, and %s", component, path, why)
	}
	return nil
}
