//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config
//go:generate ../../scripts/struct-markdown.sh

// Package sparsify is the Packer glue of the imagefactory-sparsify
// post-processor: it returns a disk image's free blocks to holes and
// converts it. The work is done by internal/sparsify and internal/diskimage.
package sparsify

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fuseexport"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sparsify"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// BuilderID identifies artifacts of this post-processor.
const BuilderID = "imagefactory.post-processor.sparsify"

// Config is the configuration of the imagefactory-sparsify post-processor.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// The output format: `raw` (default: the input is sparsified in place
	// when it is raw), `qcow2`, `vmdk`, `vhdx`, `vpc` (VHD), or `ova`: an
	// OVF package in one tar file (descriptor, SHA-256 manifest and a
	// streamOptimized vmdk), as VMware and VirtualBox import it.
	Format string `mapstructure:"format"`
	// The vmdk's subformat: `streamOptimized` (default; compressed, what
	// vSphere and ESXi import and OVF packages carry) or
	// `monolithicSparse` (one growable file that VMware Workstation,
	// Fusion and VirtualBox attach as it is). With `format = "vmdk"`.
	VMDKSubformat string `mapstructure:"vmdk_subformat"`
	// The VHD's subformat: `dynamic` (default; grows with its data) or
	// `fixed` (the disk followed by a footer), its virtual size rounded up
	// to a whole MiB: what Azure takes. With `format = "vpc"`.
	VPCSubformat string `mapstructure:"vpc_subformat"`
	// The virtual machine the OVA's descriptor asks for: CPUs (default 1)
	// and memory in MiB (default 1024). With `format = "ova"`.
	OVACPUs int `mapstructure:"ova_cpus"`
	// See `ova_cpus`.
	OVAMemory int `mapstructure:"ova_memory"`
	// Compression of qcow2 output: `none` (default), `zstd` (about 5x
	// faster than zlib here, and smaller) or `zlib` (for old readers).
	Compression string `mapstructure:"compression"`
	// The qcow2 output's compat level: `1.1` (QEMU 1.1 and later) or `0.10`
	// (older QEMU; no zstd). Defaults to the input's when the input is a
	// qcow2 (a builder's `qcow2_compat = "0.10"` stays 0.10), else `1.1`.
	QCOW2Compat string `mapstructure:"qcow2_compat"`
	// The output file. Defaults to the input's path with the format as
	// extension, `.vhd` for `vpc` as Azure and Hyper-V name VHDs (the input
	// itself for raw output of a raw input).
	Output string `mapstructure:"output"`
	// Checksum files written beside the output: `sha256` (default) and
	// `md5`, as `<output>.<type>` in `sha256sum` format. An empty list
	// writes none.
	Checksums []string `mapstructure:"checksums"`
	// Make the root filesystem just large enough for its files plus
	// `free_space`, and shrink its partition and the disk to match, as
	// diskimage-builder sizes its images. The root must be ext2/3/4 or
	// btrfs (one device; not under 256 MiB, the kernel's floor) and the
	// last partition. Images with growroot (cloud-initramfs-growroot,
	// cloud-init's growpart) grow back to their disk on first boot.
	Shrink bool `mapstructure:"shrink"`
	// Room left in the root filesystem by `shrink` (`512M`, `1G`, bytes).
	// Default `64M`, so that an image without growroot can still write its
	// logs on first boot; `0` makes it as small as resize2fs can.
	FreeSpace string `mapstructure:"free_space"`
	// The partition (1-based) holding `/`, for `shrink`. By default the
	// filesystem labelled `cloudimg-rootfs` or `img-rootfs`, else the one
	// partition holding `/etc/fstab`, as the builder finds it.
	RootPartition int `mapstructure:"root_partition"`
	// Makes the output a function of the input: seconds since 1970-01-01
	// UTC, as digits (the
	// [SOURCE_DATE_EPOCH](https://reproducible-builds.org/specs/source-date-epoch/)
	// convention). The times the trim's mount and the shrink write in an
	// ext4 superblock, and the identifiers and times of vmdk, vhdx and vpc
	// files, are derived from it and the build's name; conversions write in
	// order. The epoch of an imagefactory build before this post-processor
	// comes first, then this option, then the environment's
	// `SOURCE_DATE_EPOCH`; unset in all three, the output is not
	// reproducible. See docs/reproducible.md.
	SourceDateEpoch string `mapstructure:"source_date_epoch"`

	freeSpace int64

	ctx interpolate.Context
}

// PostProcessor is the imagefactory-sparsify post-processor.
type PostProcessor struct {
	config Config
}

// ConfigSpec returns the HCL2 spec generated by packer-sdc.
func (p *PostProcessor) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

// Configure decodes and validates the configuration.
func (p *PostProcessor) Configure(raws ...interface{}) error {
	c := &p.config
	c.Checksums = nil
	if err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderID,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
	}, raws...); err != nil {
		return err
	}
	var errs *packersdk.MultiError
	switch c.Format {
	case "":
		c.Format = "raw"
	case "raw", "qcow2", "vmdk", "vhdx", "vpc", formatOVA:
	default:
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("format %q is not one of raw, qcow2, vmdk, vhdx, vpc, ova", c.Format))
	}
	for _, err := range c.checkFormatOptions() {
		errs = packersdk.MultiErrorAppend(errs, err)
	}
	switch c.Compression {
	case "", "none":
		c.Compression = ""
	case "zstd", "zlib":
		if c.Format != "qcow2" {
			errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("compression %q needs format = \"qcow2\", not %q", c.Compression, c.Format))
		}
	default:
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("compression %q is not one of none, zstd, zlib", c.Compression))
	}
	if c.QCOW2Compat != "" {
		if c.Format != "qcow2" {
			errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("qcow2_compat %q needs format = \"qcow2\", not %q", c.QCOW2Compat, c.Format))
		} else if err := diskimage.CheckQCOW2Compat(c.QCOW2Compat, c.Compression); err != nil {
			errs = packersdk.MultiErrorAppend(errs, err)
		}
	}
	if c.FreeSpace == "" {
		c.FreeSpace = "64M"
	}
	if n, err := diskimage.ParseSize(c.FreeSpace); err != nil {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("free_space: %w", err))
	} else {
		c.freeSpace = n
	}
	if c.RootPartition < 0 {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("root_partition %d: partitions are numbered from 1", c.RootPartition))
	}
	// A bad epoch fails here, before any build runs.
	if _, err := packerglue.ReproSource(nil, c.SourceDateEpoch, c.PackerBuildName); err != nil {
		errs = packersdk.MultiErrorAppend(errs, err)
	}
	if !packerglue.IsSet(raws, "checksums") {
		c.Checksums = []string{"sha256"}
	}
	for _, t := range c.Checksums {
		if _, ok := checksumTypes[t]; !ok {
			errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("checksums: %q is not one of sha256, md5", t))
		}
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	return nil
}

var checksumTypes = map[string]func() hash.Hash{"sha256": sha256.New, "md5": md5.New}

// PostProcess sparsifies the artifact's disk image and converts it. When
// the output is the input's own file (raw to raw, or qcow2 to qcow2 by
// default), it is returned with keep and forceOverride, so Packer does not
// delete the file it got back.
func (p *PostProcessor) PostProcess(ctx context.Context, ui packersdk.Ui, in packersdk.Artifact) (packersdk.Artifact, bool, bool, error) {
	c := &p.config
	disk, format, err := diskimage.FindDisk(in.Files())
	if err != nil {
		return nil, false, false, fmt.Errorf("imagefactory-sparsify: %w", err)
	}
	src, err := packerglue.ReproSource(in, c.SourceDateEpoch, c.PackerBuildName)
	if err != nil {
		return nil, false, false, fmt.Errorf("imagefactory-sparsify: %w", err)
	}
	if src.Enabled() {
		ui.Say(fmt.Sprintf("Reproducible: SOURCE_DATE_EPOCH %d (%s), build %q", src.Epoch(), src.Time().UTC().Format(time.RFC3339), c.PackerBuildName))
	}
	compat, err := p.outputCompat(disk, format)
	if err != nil {
		return nil, false, false, fmt.Errorf("imagefactory-sparsify: %w", err)
	}
	out := c.Output
	if out == "" {
		out = disk
		if !(format == diskimage.Raw && c.Format == "raw") {
			out = strings.TrimSuffix(disk, filepath.Ext(disk)) + extension(c.Format)
		}
	}
	// In place: the output replaces the input's file (Packer must then not
	// delete what it gets back). Only a raw-to-raw run changes the file
	// where it is; anything else is converted from a trimmed view of the
	// input, under a temporary name first, and renamed over it when whole.
	inPlace := out == disk
	trimInPlace := inPlace && format == diskimage.Raw && c.Format == "raw"
	if inPlace {
		if err := packerglue.RefuseReadOnly("imagefactory-sparsify", disk, "the output would replace it; set output"); err != nil {
			return nil, false, false, err
		}
	}

	journal, closeJournal, err := packerglue.OpenJournal(ui, "sparsify", disk)
	if err != nil {
		return nil, false, false, err
	}
	defer closeJournal()
	before, err := sparsify.Allocated(disk)
	if err != nil {
		return nil, false, false, err
	}

	// Trimming works on a raw disk: a raw input is trimmed where it is when
	// it is also the output, else through a view that leaves the input as it
	// was until Packer decides what to do with it.
	view := &trimView{raw: disk, src: disk, srcFmt: format, close: func() error { return nil }}
	if !trimInPlace {
		if view, err = openTrimView(ctx, ui, journal, disk, format, out); err != nil {
			return nil, false, false, err
		}
		defer view.close()
	}

	trimStart := time.Now()
	res, err := sparsify.Trim(ctx, view.raw, journal, src, ui.Say)
	if err != nil {
		return nil, false, false, fmt.Errorf("sparsifying %s: %w", disk, err)
	}
	for _, l := range trimLines(res, time.Since(trimStart)) {
		ui.Say(l)
	}
	var shrunk *sparsify.ShrinkResult
	if c.Shrink {
		sr, err := sparsify.Shrink(ctx, view.raw, journal, sparsify.ShrinkOptions{FreeSpace: c.freeSpace, RootPartition: c.RootPartition, Repro: src}, nil)
		if err != nil {
			return nil, false, false, fmt.Errorf("imagefactory-sparsify: %w", err)
		}
		shrunk = &sr
		ui.Say(fmt.Sprintf("Shrank the root filesystem (partition %d, %s) from %s to %s, the disk from %s to %s",
			sr.Partition, sr.FS, diskimage.FormatSize(sr.FSBefore), diskimage.FormatSize(sr.FSAfter),
			diskimage.FormatSize(sr.DiskBefore), diskimage.FormatSize(sr.DiskAfter)))
	}

	if !trimInPlace {
		firmware := ""
		if c.Format == formatOVA {
			firmware = firmwareOf(ui, view.raw)
		}
		// The view must be closed (its daemon flushed) before its image is read.
		if err := view.close(); err != nil {
			return nil, false, false, err
		}
		if c.Format == formatOVA {
			err = p.writeOVA(ctx, ui, journal, view.src, view.srcFmt, out, firmware, src)
		} else {
			err = p.write(ctx, ui, view.src, view.srcFmt, out, compat, src)
		}
		if err != nil {
			return nil, false, false, err
		}
	}
	after, err := sparsify.Allocated(out)
	if err != nil {
		return nil, false, false, err
	}
	ui.Say(fmt.Sprintf("Allocated: %s in the input, %s in the output", diskimage.FormatSize(before), diskimage.FormatSize(after)))
	files := []string{out}
	for _, t := range c.Checksums {
		sidecar, err := writeChecksum(out, t)
		if err != nil {
			return nil, false, false, err
		}
		files = append(files, sidecar)
	}
	// The packages are the input's: its SBOM goes on beside the output.
	var sbomSum string
	if from := packerglue.FindSBOM(in.Files()); from != "" {
		to := packerglue.SBOMName(out)
		if to != from {
			if to, sbomSum, err = packerglue.CopySBOM(from, out, src); err != nil {
				return nil, false, false, err
			}
			ui.Say("Copied the SBOM to " + to + ", named after " + filepath.Base(out))
		}
		files = append(files, to)
	}
	art := &Artifact{Path: out, Format: c.Format, Files_: files, Before: before, After: after, Shrink: shrunk, Input: in, Repro: src, SBOMSHA256: sbomSum}
	// In place: the input's file is the output; Packer must not delete it.
	return art, inPlace, inPlace, nil
}

// trimLines are what the trim did, each partition once: a heading with
// the time taken, then a line per partition (an LV on its own line), and
// the space punched outside the partitions.
func trimLines(res sparsify.Result, took time.Duration) []string {
	lines := []string{"Trimmed the free space in " + diskimage.FormatDuration(took) + ":"}
	for _, pr := range res.Partitions {
		lines = append(lines, partitionLine(pr))
	}
	if res.Gaps > 0 {
		lines = append(lines, "  outside the partitions: "+diskimage.FormatSize(res.Gaps)+" punched")
	}
	return lines
}

// partitionLine is the trim's line for one partition; one with no
// filesystem (a BIOS boot partition) has no parentheses.
func partitionLine(pr sparsify.PartResult) string {
	what := fmt.Sprintf("partition %d", pr.Number)
	if pr.LV != "" {
		what = "LV " + pr.LV
	}
	if pr.FS != "" {
		what += " (" + pr.FS + ")"
	}
	action := pr.Action
	switch pr.Action {
	case sparsify.ActionTrimmed:
		action += " " + diskimage.FormatSize(pr.Trimmed) + " of free space"
	case sparsify.ActionSwap:
		action = "swap: " + diskimage.FormatSize(pr.Trimmed) + " punched past its header"
	}
	return "  " + what + ": " + action
}

// outputCompat is the qcow2 output's compat level: qcow2_compat, else the
// input's when it is a qcow2, so that what the builder was asked to make
// for old QEMU stays readable there; "" for other outputs (qemu-img's
// default). An input of 0.10 with zstd asked for cannot be kept: refused
// rather than silently made unreadable by the old QEMU it was made for.
func (p *PostProcessor) outputCompat(disk string, format diskimage.Format) (string, error) {
	c := &p.config
	if c.Format != "qcow2" || c.QCOW2Compat != "" || format != diskimage.QCOW2 {
		return c.QCOW2Compat, nil
	}
	in, err := diskimage.QCOW2CompatOf(disk)
	if err != nil {
		return "", err
	}
	if in == diskimage.QCOW2Compat010 && c.Compression == "zstd" {
		return "", fmt.Errorf("the input %s is a qcow2 of compat 0.10 (for QEMU before 1.1), which cannot hold zstd clusters: set compression = \"zlib\" to keep 0.10, or qcow2_compat = \"1.1\" here to make a 1.1 image", disk)
	}
	return in, nil
}

// write produces out from src, the trimmed image (of format srcFmt).
func (p *PostProcessor) write(ctx context.Context, ui packersdk.Ui, src string, srcFmt diskimage.Format, out, compat string, rs *repro.Source) error {
	c := &p.config
	start := time.Now()
	if c.Format == "raw" && srcFmt == diskimage.Raw {
		if err := os.Rename(src, out); err != nil {
			return fmt.Errorf("naming %s: %w", out, err)
		}
		return nil
	}
	what := c.Format
	if c.Compression != "" {
		what += " (" + c.Compression + ")"
	}
	if sub := c.subformat(); sub != "" {
		what += " (" + sub + ")"
	}
	if c.Format == "vpc" && c.subformat() == diskimage.VPCFixed {
		if err := alignForAzure(ctx, ui, src, srcFmt); err != nil {
			return err
		}
	}
	ui.Say(fmt.Sprintf("Converting to %s...", what))
	bar := packerglue.NewPercentBar(ui, "conversion to "+what)
	err := diskimage.Convert(ctx, src, srcFmt, out, diskimage.Format(c.Format), diskimage.ConvertOptions{
		Compression: c.Compression,
		Compat:      compat,
		Subformat:   c.subformat(),
		Progress:    bar.SetPercent,
		Repro:       rs,
	})
	bar.Close()
	if err != nil {
		return fmt.Errorf("converting to %s: %w", c.Format, err)
	}
	fi, _ := os.Stat(out)
	ui.Say(fmt.Sprintf("Wrote %s (%s) in %s", out, diskimage.FormatSize(fi.Size()), diskimage.FormatDuration(time.Since(start))))
	return nil
}

// trimView is what the trim works on when the input must stay as it was:
// raw is the raw file to trim (and shrink), src (of format srcFmt) the
// image the output is then converted from.
type trimView struct {
	raw, src string
	srcFmt   diskimage.Format
	close    func() error // idempotent
}

// openTrimView puts a qcow2 overlay on the input and exports it as a raw
// file over FUSE: the trim's discards become zero clusters in the overlay,
// nothing is copied, and the input is never written. Without FUSE it falls
// back to a raw working copy of the input.
func openTrimView(ctx context.Context, ui packersdk.Ui, journal *cleanup.Journal, disk string, format diskimage.Format, out string) (*trimView, error) {
	hidden := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".sparsify")
	overlay := hidden + ".qcow2"
	h, err := journal.Take(cleanup.FileEntry(overlay))
	if err != nil {
		return nil, err
	}
	if err := diskimage.CreateOverlay(ctx, disk, format, overlay); err != nil {
		return nil, errors.Join(err, journal.Release(h))
	}
	exp, err := fuseexport.Open(ctx, overlay, string(diskimage.QCOW2), journal)
	if err == nil {
		ui.Say(fmt.Sprintf("Trimming through an overlay on %s (qemu-storage-daemon, FUSE): the input is not copied nor changed", disk))
		closed := false
		return &trimView{raw: exp.Path, src: overlay, srcFmt: diskimage.QCOW2, close: func() error {
			if closed {
				return nil
			}
			closed = true
			return exp.Close()
		}}, nil
	}
	if rerr := journal.Release(h); rerr != nil || !errors.Is(err, fuseexport.ErrUnavailable) {
		return nil, errors.Join(fmt.Errorf("imagefactory-sparsify: %w", err), rerr)
	}
	ui.Say(fmt.Sprintf("No FUSE export here (%v): trimming a raw working copy", err))
	work := hidden + ".raw"
	if h, err = journal.Take(cleanup.FileEntry(work)); err != nil {
		return nil, err
	}
	start := time.Now()
	if format == diskimage.Raw {
		_, err = diskimage.Copy(ctx, disk, work, nil)
	} else {
		err = diskimage.ConvertToRaw(ctx, disk, format, work, nil)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("working copy of %s: %w", disk, err), journal.Release(h))
	}
	ui.Say(fmt.Sprintf("Working copy of %s in %s", disk, diskimage.FormatDuration(time.Since(start))))
	return &trimView{raw: work, src: work, srcFmt: diskimage.Raw, close: func() error { return nil }}, nil
}

// writeChecksum writes <path>.<type> in sha256sum/md5sum format.
func writeChecksum(path, typ string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := checksumTypes[typ]()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum of %s: %w", path, err)
	}
	sidecar := path + "." + typ
	line := hex.EncodeToString(h.Sum(nil)) + "  " + filepath.Base(path) + "\n"
	if err := os.WriteFile(sidecar, []byte(line), 0o644); err != nil {
		return "", err
	}
	return sidecar, nil
}

// extension is the default output's file extension for a format: the
// format's name, but .vhd for vpc (qemu-img's name for the VHD format;
// Azure's upload tools and Hyper-V expect .vhd).
func extension(format string) string {
	if format == "vpc" {
		return ".vhd"
	}
	return "." + format
}
