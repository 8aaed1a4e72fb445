package imagefactory

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/session"
)

// stepAttachPartitions reads the partition table in user space and attaches
// one loop device per partition, with offset and size limit (the kernel
// here parses no partition tables). A disk without a table is one
// filesystem, attached whole.
type stepAttachPartitions struct {
	session *session.Session
}

func (s *stepAttachPartitions) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	cfg := configOf(state)
	ui := uiOf(state)
	// Only the chroot strategy writes staged FAT filesystems back
	// (stepMountFstab's release); the qemu strategy's guest mounts them.
	fat := session.FATPlaceholder
	var src *repro.Source // the qemu strategy's guest writes are not normalized
	if cfg.Strategy == StrategyChroot {
		fat = session.FATMode(cfg.FATMounts)
		src = cfg.repro
	}
	sess, err := session.Attach(ctx, session.Options{
		Disk:           state.Get(stateDiskPath).(string),
		Journal:        journalOf(state),
		RootPartition:  cfg.RootPartition,
		MountPath:      state.Get(stateMountPath).(string),
		MountOptions:   cfg.MountOptions,
		RequiredMounts: cfg.RequiredMounts,
		FAT:            fat,
		Log:            ui.Say,
		Warn:           func(m string) { ui.Error("Warning: " + m) },
		Repro:          src,
		// Provisioners run in a chroot on these mounts: a device node in
		// the image must not open a host disk.
		NoDev: cfg.Strategy == StrategyChroot,
	})
	var notDisk *session.NotADiskError
	if errors.As(err, &notDisk) && cfg.BaseImage != "" {
		// The working disk is a copy: name the user's file.
		return haltf(state, "base_image %s is not a disk image: it holds neither a partition table (MBR or GPT) nor a filesystem; give a raw, qcow2, vmdk, vhdx, vdi or vhd disk image, maybe gzip, xz or zstd compressed", cfg.BaseImage)
	}
	if err != nil {
		return haltf(state, "base image %s: %v", cfg.BaseImage, err)
	}
	s.session = sess
	state.Put(stateSession, sess)
	ui.Say(fmt.Sprintf("Partitions (%s):\n%s", sess.Table.Kind, sess.Describe()))
	return multistep.ActionContinue
}

func (s *stepAttachPartitions) release(state multistep.StateBag) error {
	if s.session == nil {
		return nil
	}
	sess := s.session
	s.session = nil
	return sess.Detach()
}

func (s *stepAttachPartitions) Cleanup(state multistep.StateBag) {
	if err := s.release(state); err != nil {
		uiOf(state).Error(fmt.Sprintf("detaching the loop devices: %v", err))
	}
}

func sessionOf(state multistep.StateBag) *session.Session {
	return state.Get(stateSession).(*session.Session)
}
