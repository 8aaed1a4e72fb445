package elements

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/elements"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// target is the image as the provisioner reaches it: commands and files
// through the build's communicator, and, when the builder mounted the
// image on this host (MountPath), its root for the outside hooks and a
// read-only bind of the hooks tree.
type target struct {
	comm      packersdk.Communicator
	mountPath string
	journal   *cleanup.Journal
	closeJ    func()
}

func newTarget(ui packersdk.Ui, comm packersdk.Communicator, mountPath string) (*target, error) {
	t := &target{comm: comm}
	if mountPath == "" {
		return t, nil
	}
	if fi, err := os.Stat(mountPath); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("the builder's MountPath %q is not a directory", mountPath)
	}
	t.mountPath = mountPath
	j, closeJ, err := packerglue.OpenJournal(ui, "imagefactory-elements", mountPath)
	if err != nil {
		return nil, err
	}
	t.journal, t.closeJ = j, closeJ
	return t, nil
}

func (t *target) close() error {
	if t.closeJ != nil {
		t.closeJ()
	}
	return nil
}

func (t *target) RootPath() string { return t.mountPath }

func (t *target) RunInside(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	rc := &packersdk.RemoteCmd{Command: command, Stdout: stdout, Stderr: stderr}
	if err := t.comm.Start(ctx, rc); err != nil {
		return 0, err
	}
	code := rc.Wait()
	if code == packersdk.CmdDisconnect {
		return code, errors.New("the connection to the image was lost")
	}
	return code, nil
}

func (t *target) Download(src string, w io.Writer) error { return t.comm.Download(src, w) }

func (t *target) Upload(dst string, r io.Reader, mode uint32) error {
	return upload(t.comm, dst, r, mode)
}

func (t *target) UploadDir(dst, src string) error { return t.comm.UploadDir(dst, src, nil) }

// ShowHooks binds the tree read-only on /tmp/in_target.d when the image is
// mounted here (journaled, so a killed build's bind is reaped), else
// uploads it there and removes it afterwards (an image reached over SSH).
func (t *target) ShowHooks(dir string) (func() error, error) {
	if t.mountPath == "" {
		return t.uploadHooks(dir)
	}
	root, err := inroot.Open(t.mountPath)
	if err != nil {
		return nil, err
	}
	existed, err := root.Exists(elements.InTarget)
	if err != nil {
		root.Close()
		return nil, err
	}
	if existed {
		root.Close()
		return nil, fmt.Errorf("%s already exists in the image", elements.InTarget)
	}
	stack := mounts.NewStackOn(t.journal, root)
	if err := stack.Bind(dir, elements.InTarget, true); err != nil {
		return nil, errors.Join(err, stack.UnmountAll(), removeIn(t.mountPath))
	}
	return func() error {
		err := stack.UnmountAll()
		if err != nil {
			return err
		}
		return removeIn(t.mountPath)
	}, nil
}

// removeIn removes the empty mount point the bind left in the image.
func removeIn(mountPath string) error {
	root, err := inroot.Open(mountPath)
	if err != nil {
		return err
	}
	defer root.Close()
	if ok, _ := root.Exists(elements.InTarget); !ok {
		return nil
	}
	return root.Remove(elements.InTarget)
}

func (t *target) uploadHooks(dir string) (func() error, error) {
	ctx := context.Background()
	rm := func() error {
		code, err := t.RunInside(ctx, "rm -rf "+elements.InTarget, io.Discard, io.Discard)
		if err == nil && code != 0 {
			err = fmt.Errorf("rm -rf %s in the image exited with %d", elements.InTarget, code)
		}
		return err
	}
	if code, err := t.RunInside(ctx, "test ! -e "+elements.InTarget, io.Discard, io.Discard); err != nil || code != 0 {
		return nil, fmt.Errorf("%s already exists in the image", elements.InTarget)
	}
	if err := t.comm.UploadDir(elements.InTarget, dir+"/", nil); err != nil {
		return nil, errors.Join(err, rm())
	}
	if code, err := t.RunInside(ctx, "chmod -R a-w "+elements.InTarget, io.Discard, io.Discard); err != nil || code != 0 {
		return nil, errors.Join(fmt.Errorf("chmod -R a-w %s: exit %d %v", elements.InTarget, code, err), rm())
	}
	return rm, nil
}

// modeInfo is an os.FileInfo carrying only a mode, for Upload.
type modeInfo uint32

func (m modeInfo) Name() string       { return "" }
func (m modeInfo) Size() int64        { return 0 }
func (m modeInfo) Mode() fs.FileMode  { return fs.FileMode(m) }
func (m modeInfo) ModTime() time.Time { return time.Time{} }
func (m modeInfo) IsDir() bool        { return false }
func (m modeInfo) Sys() any           { return nil }
