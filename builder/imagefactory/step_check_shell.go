package imagefactory

import (
	"context"
	"errors"
	"io/fs"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// chrootShell is the shell every chroot command runs with (`/bin/sh -c
// CMD` in the chroot's sandbox, the Communicator) and the one Packer's
// shell provisioner calls its scripts through.
const chrootShell = "/bin/sh"

// stepCheckShell stops a chroot build before anything runs in the image
// when the image has no /bin/sh (a busybox image without its sh link, an
// image stripped to one static program): otherwise each provisioner fails
// with chroot's "No such file or directory", which names neither the image
// nor the cause. It runs after post_mount_commands, which may add the shell.
type stepCheckShell struct{}

func (s *stepCheckShell) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	// Stat resolves /bin/sh inside the image (a link to busybox, /bin a
	// link to usr/bin), never on the host.
	fi, err := sessionOf(state).RootFS().Stat(chrootShell)
	why := ""
	switch {
	case errors.Is(err, fs.ErrNotExist):
		why = "it does not exist"
	case err != nil:
		// The error's path is the host's mount point: name only the cause.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		why = err.Error()
	case !fi.Mode().IsRegular():
		why = "it is not a regular file"
	case fi.Mode().Perm()&0o111 == 0:
		why = "it is not executable"
	default:
		return multistep.ActionContinue
	}
	return haltf(state, "%s has no usable %s (%s): the chroot strategy runs every provisioner command as "+
		"`%s -c COMMAND` in the image, and Packer's shell provisioner needs %s too. Give the image a shell before provisioning, "+
		"e.g. for a busybox image `post_mount_commands = [\"ln -s busybox {{.MountPath}}/bin/sh\"]`, or build from an image that has one",
		configOf(state).inputName(), chrootShell, why, chrootShell, chrootShell)
}

func (s *stepCheckShell) Cleanup(multistep.StateBag) {}
