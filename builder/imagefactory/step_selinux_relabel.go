package imagefactory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/chrootprep"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/selinux"
)

// stepSELinuxRelabel gives what the build wrote the labels of the image's
// SELinux policy (selinux_relabel). Its Run, before copy_files, checks the
// policy is there (failing before any provisioning) and notes the tree's
// state; its release, once the swapped files are restored and the chroot's
// processes stopped but while the chroot mounts are still up (the image's
// setfiles runs in the chroot), relabels what changed.
type stepSELinuxRelabel struct {
	snap   *selinux.Snapshot
	skip   []string
	wanted bool // the image asked for SELinux before provisioning
	done   bool
}

func (s *stepSELinuxRelabel) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	root := sessionOf(state).RootFS()
	s.done = false
	s.skip = chrootSkip(state)
	if cfg.SELinuxRelabel != selinux.ModeAuto && cfg.SELinuxRelabel != selinux.ModeFull {
		return multistep.ActionContinue
	}
	sc, ok, err := selinux.ReadConfig(root)
	if err != nil {
		return halt(state, err)
	}
	if !ok && cfg.SELinuxRelabel == selinux.ModeFull {
		return halt(state, selinux.ErrFullWithoutConfig)
	}
	if !ok || (cfg.SELinuxRelabel == selinux.ModeAuto && !sc.Wants()) {
		return multistep.ActionContinue
	}
	s.wanted = sc.Wants()
	if _, err := selinux.FindPolicy(root, sc); err != nil {
		var np *selinux.NoPolicyError
		if !errors.As(err, &np) || cfg.SELinuxRelabel != selinux.ModeAuto || sc.Mode != selinux.Permissive {
			return halt(state, err)
		}
		// Permissive without its policy: the release warns.
		return multistep.ActionContinue
	}
	if cfg.SELinuxRelabel == selinux.ModeAuto {
		if s.snap, err = selinux.Snap(root, s.skip); err != nil {
			return halt(state, err)
		}
	}
	return multistep.ActionContinue
}

// chrootSkip are the mounts a relabel must not enter: the chroot's own
// and a bound resolv.conf (host files).
func chrootSkip(state multistep.StateBag) []string {
	skip, _ := state.Get(stateChrootMounts).([]string)
	if configOf(state).ResolvConf == ResolvBind {
		skip = append(skip, chrootprep.ResolvConfPath)
	}
	return skip
}

func (s *stepSELinuxRelabel) release(state multistep.StateBag) error {
	if s.done {
		return nil
	}
	s.done = true
	cfg := configOf(state)
	root := sessionOf(state).RootFS()
	req := selinux.Request{Root: root, Mode: cfg.SELinuxRelabel, Skip: s.skip, Chroot: chrootRunner(state)}
	if cfg.SELinuxRelabel == selinux.ModeAuto {
		if s.snap == nil && !s.wanted {
			// The image wanted no SELinux before provisioning; if it does
			// now, nothing tells what changed: label everything.
			req.Mode = selinux.ModeFull
			if sc, ok, err := selinux.ReadConfig(root); err != nil || !ok || !sc.Wants() {
				req.Mode = selinux.ModeAuto
			}
		} else if s.snap != nil {
			ch, err := s.snap.Changed(root)
			if err != nil {
				return err
			}
			req.Changed = ch.Paths
		}
	}
	out, err := selinux.Relabel(context.Background(), req)
	// The image's setfiles ran in the chroot after its processes were
	// stopped: whatever it left running goes the same way.
	if serr := sessionOf(state).StopChrootProcesses(); serr != nil {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return err
	}
	if out.Warning != "" {
		uiOf(state).Error(out.Warning)
	}
	uiOf(state).Say(out.Summary)
	return nil
}

// chrootRunner runs a command in the chroot the way provisioners' run.
func chrootRunner(state multistep.StateBag) selinux.Runner {
	comm, ok := state.Get("communicator").(packersdk.Communicator)
	if !ok {
		return nil
	}
	return func(ctx context.Context, argv []string) (string, error) {
		q := make([]string, len(argv))
		for i, a := range argv {
			q[i] = shellQuote(a)
		}
		var out bytes.Buffer
		rc := &packersdk.RemoteCmd{Command: strings.Join(q, " "), Stdout: &out, Stderr: &out}
		if err := comm.Start(ctx, rc); err != nil {
			return out.String(), err
		}
		if status := rc.Wait(); status != 0 {
			return out.String(), fmt.Errorf("exit status %d", status)
		}
		return out.String(), nil
	}
}

// Cleanup relabels nothing: a failed build's disk is thrown away.
func (s *stepSELinuxRelabel) Cleanup(multistep.StateBag) {}

// relabelOffline labels what the qemu strategy wrote in the image offline
// after the boot (the guest's own kernel labelled what its provisioners
// wrote): the report's paths that still exist and the directories made
// for them, with the host's setfiles -r (nothing of the image runs
// offline).
func relabelOffline(ctx context.Context, state multistep.StateBag, changes []scrub.Change) error {
	root := sessionOf(state).RootFS()
	var paths []string
	for _, c := range changes {
		if c.Action == qemu.Kept {
			continue
		}
		if ok, err := root.Exists(c.Path); err == nil && ok {
			paths = append(paths, c.Path)
		}
	}
	out, err := selinux.Relabel(ctx, selinux.Request{
		Root: root, Mode: configOf(state).SELinuxRelabel, Changed: selinux.WithNewParents(root, paths),
	})
	if err != nil {
		return err
	}
	if out.Warning != "" {
		uiOf(state).Error(out.Warning)
	}
	uiOf(state).Say(out.Summary)
	return nil
}
