package imagefactory

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// stepQemuKey makes the machine's run directory (QMP socket, seed, OVMF
// variables, a copied-out kernel; journaled, removed at the end) and a
// fresh SSH key for this build only, given to the communicator.
type stepQemuKey struct{}

func (s *stepQemuKey) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	id := rand.Text()[:10]
	// Short and on tmpfs: a unix socket path must fit in 108 bytes.
	dir := filepath.Join(cleanup.DefaultStateDir(), "qemu", id)
	if _, err := journalOf(state).Take(cleanup.FileEntry(dir)); err != nil {
		return halt(state, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return haltf(state, "creating the machine's directory: %v", err)
	}
	state.Put(stateQemuDir, dir)
	key, err := qemu.NewKey("imagefactory-build-" + id)
	if err != nil {
		return haltf(state, "making the build's SSH key: %v", err)
	}
	state.Put(stateSSHKey, key)
	state.Put(stateInstanceID, "imagefactory-"+id)
	cfg.Comm.SSHPrivateKey = key.Private
	cfg.Comm.SSHPublicKey = []byte(key.AuthorizedKey)
	uiOf(state).Say(fmt.Sprintf("Made an ed25519 SSH key for this build (%s)", "imagefactory-build-"+id))
	return multistep.ActionContinue
}

func (s *stepQemuKey) Cleanup(multistep.StateBag) {}
