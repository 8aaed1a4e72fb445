package imagefactory

import (
	"fmt"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/session"
)

// keepForInspection runs when the steps are over and the journal is still
// open: packer build -on-error=abort (or "abort" at -on-error=ask) skipped
// every cleanup of a failed or cancelled build. What the build holds is
// handed to a later reap (cleanup.Journal.Keep), with the output directory
// to remove last, as its own cleanup would have; the user is told where
// the image is mounted and the exact command that releases it all.
func keepForInspection(state multistep.StateBag) {
	ui := uiOf(state)
	j := journalOf(state)
	if len(j.Held()) == 0 {
		// Failed before taking anything: nothing to look at.
		if err := j.Close(); err != nil {
			ui.Error(err.Error())
		}
		return
	}
	var after []cleanup.Entry
	if made, _ := state.GetOk(stateOutputDirMade); made == true {
		after = append(after, cleanup.DirEntry(configOf(state).OutputDirectory))
	}
	kept, err := j.Keep(after...)
	if err != nil {
		ui.Error(fmt.Sprintf("keeping the build for inspection: %v", err))
	}
	mountPath, _ := state.Get(stateMountPath).(string)
	msg := keptMessage(kept, after, mountPath, cleanup.ReapCommandLine(j.Path()))
	// The chroot's processes live on in their namespaces, not only in
	// the journal: their init must not die with this plugin.
	if sess, ok := state.Get(stateSession).(*session.Session); ok && sess != nil {
		pid, cgroup, err := sess.KeepSandbox()
		if err != nil {
			ui.Error(fmt.Sprintf("keeping the chroot's processes for inspection: %v", err))
		}
		if pid != 0 {
			enter := strings.Join(sandbox.EnterArgs(pid, "/bin/sh"), " ")
			if cgroup != "" {
				// The shell joins the cgroup first, so that the device
				// filter holds for it as for the build's commands.
				enter = fmt.Sprintf("sh -c 'echo $$ >%s/cgroup.procs && exec %s'", cgroup, enter)
			}
			msg += fmt.Sprintf("\nThe chroot's processes run on in their own namespaces (init: PID %d); enter them with:\n  %s", pid, enter)
		}
	}
	ui.Say(msg)
}

// keptMessage says what an aborted build keeps (kept: the journal's
// entries in take order; after: what its reap removes last), where its
// root is mounted (mountPath, when kept holds that mount) and the command
// that releases it.
func keptMessage(kept, after []cleanup.Entry, mountPath, command string) string {
	var b strings.Builder
	b.WriteString("-on-error=abort: nothing this build holds was released; it is kept for inspection.\n")
	for _, e := range kept {
		if e.Kind == cleanup.KindMount && e.Path == mountPath {
			fmt.Fprintf(&b, "The image's root filesystem is mounted at %s (look inside: chroot %s /bin/sh).\n", mountPath, mountPath)
			break
		}
	}
	b.WriteString("Held:\n")
	for _, e := range kept {
		fmt.Fprintf(&b, "  %s\n", describeKept(e))
	}
	for _, e := range after {
		fmt.Fprintf(&b, "  output directory: %s (removed last, if nothing else is left in it)\n", e.Path)
	}
	b.WriteString("Release all of it (stop the chroot's processes, unmount, detach, remove the working disk) with:\n")
	fmt.Fprintf(&b, "  %s\n", command)
	b.WriteString("Later builds leave it as it is and print that command again.")
	return b.String()
}

// describeKept is one line of keptMessage.
func describeKept(e cleanup.Entry) string {
	switch e.Kind {
	case cleanup.KindMount:
		return fmt.Sprintf("mounted: %s (%s %s)", e.Path, e.FSType, e.Source)
	case cleanup.KindLoop:
		return fmt.Sprintf("loop device: %s (backing %s, offset %d)", e.Path, e.Backing, e.Offset)
	case cleanup.KindChroot:
		return fmt.Sprintf("processes rooted in %s (stopped by the reap)", e.Path)
	case cleanup.KindFile:
		return fmt.Sprintf("file: %s", e.Path)
	}
	return e.String()
}

// keptClash names what of this build (its output directory, its mount
// path) an aborted build kept for inspection still holds, or "".
func keptClash(k cleanup.Kept, outputDir, mountPath string) string {
	switch {
	case outputDir != "" && k.Holds(outputDir):
		return "output directory " + outputDir
	case mountPath != "" && k.Holds(mountPath):
		return "mount_path " + mountPath
	}
	return ""
}

// keptReminder is what a build says of an aborted build it leaves alone.
func keptReminder(k cleanup.Kept) string {
	where := "nothing mounted"
	if len(k.Mounts) > 0 {
		where = "root mounted at " + k.Mounts[0]
	}
	return fmt.Sprintf("An aborted build is kept for inspection and left as it is (%s, since %s; %s). Release it with:\n  %s",
		k.Label, k.Created.Local().Format("2006-01-02 15:04:05"), where, cleanup.ReapCommandLine(k.Journal))
}
