package imagefactory

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fuseexport"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// stepWorkingDisk makes the raw working disk from the base image: a reflink
// or hole-skipping copy of a raw image, a conversion of any other format,
// decompressing on the way in; with use_backing_file, a qcow2 overlay on
// the base shown as a raw file over FUSE (work_overlay.go). The base image
// is only ever read.
type stepWorkingDisk struct {
	work    string
	handle  cleanup.Handle // the journal removes the disk if the build is killed
	taken   bool
	overlay *workOverlay // use_backing_file, with a FUSE export
}

func (s *stepWorkingDisk) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	ui := uiOf(state)
	cfg := configOf(state)
	src := state.Get(stateBaseImagePath).(string)
	// A hidden name: nothing under the artifact's name until it is whole.
	s.work = filepath.Join(cfg.OutputDirectory, "."+cfg.ImageName+".work.raw")
	h, err := journalOf(state).Take(cleanup.FileEntry(s.work))
	if err != nil {
		return halt(state, err)
	}
	s.handle, s.taken = h, true

	compression, err := diskimage.DetectCompression(src)
	if err != nil {
		return haltf(state, "base_image %s: %v", cfg.BaseImage, err)
	}
	if compression != diskimage.NoCompression && cfg.UseBackingFile {
		return haltf(state, "use_backing_file: base_image %s is %s compressed; a backing file must be a disk image qemu can read in place (decompress it first)", cfg.BaseImage, compression)
	}
	// disk_size before anything is decompressed, copied or converted,
	// when the size can be read from a header or index.
	if size, from, err := diskimage.PeekVirtualSize(src); err == nil && from != diskimage.SizeUnknown {
		if err := checkDiskSize(cfg, size, from); err != nil {
			return halt(state, err)
		}
	}
	if compression != diskimage.NoCompression {
		plain := s.work + ".decompressed"
		defer os.Remove(plain)
		ui.Say(fmt.Sprintf("Decompressing the %s base image...", compression))
		wrap := func(size int64, r io.ReadCloser) io.ReadCloser {
			return ui.TrackProgress(filepath.Base(src), 0, size, r)
		}
		start := time.Now()
		if err := diskimage.Decompress(ctx, src, plain, wrap); err != nil {
			return haltf(state, "decompressing base_image %s: %v", cfg.BaseImage, err)
		}
		ui.Say(doneLine(fmt.Sprintf("Decompressed the %s base image", compression), time.Since(start), fileSize(plain)))
		src = plain
	}

	if isURL(cfg.BaseImage) {
		// Before qemu-img opens it: opening follows the references.
		if err := refuseExternalReferences(src); err != nil {
			return haltf(state, "base image %s: %v", cfg.BaseImage, err)
		}
	}
	info, err := diskimage.Inspect(ctx, src)
	if err != nil {
		return haltf(state, "base_image %s: %v", cfg.BaseImage, err)
	}
	state.Put(stateBaseFormat, info.Format)
	state.Put(stateBaseSize, info.VirtualSize)
	if !cfg.UseBackingFile {
		if err := checkDiskSize(cfg, info.VirtualSize, "header, as qemu-img info reads it"); err != nil {
			return halt(state, err)
		}
	}

	if cfg.UseBackingFile {
		var size int64
		if cfg.DiskSize != "" {
			size, _ = diskimage.ParseSize(cfg.DiskSize) // validated in Prepare
		}
		w, err := openWorkOverlay(ctx, journalOf(state), cfg.OutputDirectory, cfg.ImageName, src, info.Format, info.VirtualSize, size)
		switch {
		case err == nil:
			s.overlay = w
			state.Put(stateWorkOverlay, w)
			state.Put(stateDiskPath, w.view)
			putGenerated(state, "DiskPath", w.view)
			ui.Say(fmt.Sprintf("Working disk: a qcow2 overlay on %s, shown as a raw file over FUSE (qemu-storage-daemon); nothing of the base is copied", src))
			return multistep.ActionContinue
		case !errors.Is(err, fuseexport.ErrUnavailable):
			return haltf(state, "use_backing_file: %v", err)
		default:
			ui.Say(fmt.Sprintf("No FUSE export here (%v): the working disk is a raw copy, and the overlay is computed from it at the end", err))
		}
	}

	start := time.Now()
	if info.Format == diskimage.Raw && compression != diskimage.NoCompression {
		// The decompressed file is sparse already, and in place.
		if err := os.Rename(src, s.work); err != nil {
			return haltf(state, "decompressing base image %s: %v", cfg.BaseImage, err)
		}
		ui.Say(fmt.Sprintf("Working disk: the decompressed base image, %s", fileSize(s.work)))
	} else if info.Format == diskimage.Raw {
		bar := packerglue.NewProgressBar(ui, "working copy", info.ActualSize)
		method, err := diskimage.Copy(ctx, src, s.work, bar.Add)
		bar.Close()
		if err != nil {
			return haltf(state, "copying base image %s: %v", cfg.BaseImage, err)
		}
		ui.Say(doneLine(fmt.Sprintf("Working disk: %s of base_image %s", method, cfg.BaseImage), time.Since(start), fileSize(s.work)))
	} else {
		ui.Say(fmt.Sprintf("Converting the %s base image to a raw working disk...", info.Format))
		bar := packerglue.NewPercentBar(ui, "conversion")
		err := diskimage.ConvertToRaw(ctx, src, info.Format, s.work, bar.SetPercent)
		bar.Close()
		if err != nil {
			return haltf(state, "converting base image %s from %s: %v", cfg.BaseImage, info.Format, err)
		}
		ui.Say(doneLine(fmt.Sprintf("Working disk: base_image %s converted from %s", cfg.BaseImage, info.Format), time.Since(start), fileSize(s.work)))
	}
	state.Put(stateDiskPath, s.work)
	putGenerated(state, "DiskPath", s.work)
	return multistep.ActionContinue
}

// Cleanup removes the working disk unless the finalize step renamed it
// (then there is nothing left to remove).
func (s *stepWorkingDisk) Cleanup(state multistep.StateBag) {
	if s.overlay != nil {
		if err := s.overlay.release(journalOf(state)); err != nil {
			uiOf(state).Error(fmt.Sprintf("removing the working overlay: %v", err))
		}
	}
	if s.taken {
		if err := journalOf(state).Release(s.handle); err != nil {
			uiOf(state).Error(fmt.Sprintf("removing the working disk: %v", err))
		}
	}
}

// refuseExternalReferences rejects a downloaded image that names other
// files, judged from its header alone: opening it would make qemu-img open
// them, and an image from the network may name any host file (a qcow2
// backed by /dev/vda, a vmdk descriptor whose extent is /etc/shadow).
func refuseExternalReferences(path string) error {
	format, err := diskimage.Detect(path)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case format == diskimage.QCOW2 && len(head) >= 16 && binary.BigEndian.Uint64(head[8:16]) != 0:
		// The qcow2 header's backing_file_offset.
		return errors.New("it is a qcow2 with a backing file; a downloaded image must be self-contained")
	case format == diskimage.VMDK && bytes.Contains(head, []byte("# Disk DescriptorFile")):
		return errors.New("it is a vmdk descriptor naming extent files; a downloaded image must be self-contained (use a monolithic vmdk, or qcow2)")
	}
	return nil
}

// checkDiskSize refuses a disk_size smaller than the base image's virtual
// size (read from where), naming both.
func checkDiskSize(cfg *Config, virtual int64, from diskimage.SizeSource) error {
	if cfg.DiskSize == "" {
		return nil
	}
	size, _ := diskimage.ParseSize(cfg.DiskSize) // validated in Prepare
	if size >= virtual {
		return nil
	}
	return fmt.Errorf("disk_size %s is smaller than base_image %s, whose virtual size is %s (%d bytes, from its %s); images are never shrunk: set disk_size to at least %s or remove it",
		cfg.DiskSize, cfg.BaseImage, diskimage.FormatSize(virtual), virtual, from, diskimage.FormatSize(virtual))
}
