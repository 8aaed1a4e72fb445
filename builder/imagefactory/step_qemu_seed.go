package imagefactory

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// stepQemuSeed writes the cloud-init NoCloud seed (an ISO9660 labelled
// cidata, built in Go) carrying the build's public key.
type stepQemuSeed struct{}

func (s *stepQemuSeed) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	key := state.Get(stateSSHKey).(qemu.Key)
	id := state.Get(stateInstanceID).(string)
	data := map[string]string{"SSHPublicKey": key.AuthorizedKey, "InstanceID": id, "BuildName": cfg.PackerBuildName}
	render := func(name, text, def string) (string, error) {
		if text == "" {
			return def, nil
		}
		ictx := cfg.ctx
		ictx.Data = data
		out, err := interpolate.Render(text, &ictx)
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return out, nil
	}
	ud, err := render("user_data", cfg.UserData, qemu.DefaultUserData(cfg.Comm.SSHUsername, key.AuthorizedKey))
	if err != nil {
		return halt(state, err)
	}
	md, err := render("meta_data", cfg.MetaData, qemu.DefaultMetaData(id, "localhost"))
	if err != nil {
		return halt(state, err)
	}
	path := filepath.Join(state.Get(stateQemuDir).(string), "seed.iso")
	if err := qemu.WriteSeed(path, qemu.Seed{UserData: ud, MetaData: md}); err != nil {
		return halt(state, err)
	}
	state.Put(stateSeed, path)
	return multistep.ActionContinue
}

func (s *stepQemuSeed) Cleanup(multistep.StateBag) {}
