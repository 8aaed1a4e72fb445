package imagefactory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/chrootprep"
)

// hostResolvConf is the host's resolver configuration given to the image.
var hostResolvConf = "/etc/resolv.conf"

// stepResolvConf gives the chroot the host's name resolution (resolv_conf)
// and puts the image's own configuration back afterwards, exactly.
type stepResolvConf struct {
	restore chrootprep.Restore
}

func (s *stepResolvConf) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	sess := sessionOf(state)
	switch configOf(state).ResolvConf {
	case ResolvCopy:
		if _, err := os.Stat(hostResolvConf); errors.Is(err, fs.ErrNotExist) {
			// Some containers have none: nothing to give the image.
			uiOf(state).Say(fmt.Sprintf("The host has no %s: the image keeps its own", hostResolvConf))
			return multistep.ActionContinue
		}
		r, err := chrootprep.CopyResolvConf(sess.RootFS(), hostResolvConf)
		if err != nil {
			return halt(state, err)
		}
		s.restore = r
	case ResolvBind:
		if err := chrootprep.BindTarget(sess.RootFS()); err != nil {
			return halt(state, err)
		}
		// Unmounted with the rest of the stack.
		if err := sess.BindFile(hostResolvConf, chrootprep.ResolvConfPath); err != nil {
			return halt(state, err)
		}
	}
	return multistep.ActionContinue
}

func (s *stepResolvConf) release(state multistep.StateBag) error {
	if s.restore == nil {
		return nil
	}
	err := s.restore()
	s.restore = nil
	return err
}

func (s *stepResolvConf) Cleanup(state multistep.StateBag) {
	if err := s.release(state); err != nil {
		uiOf(state).Error(err.Error())
	}
}
