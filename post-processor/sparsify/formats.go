package sparsify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/ova"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// formatOVA is the format option of an OVA output: a streamOptimized vmdk
// packed with its OVF descriptor (internal/ova).
const formatOVA = "ova"

// Defaults of the OVA's virtual machine.
const (
	defaultOVACPUs   = 1
	defaultOVAMemory = 1024 // MiB
)

// checkFormatOptions validates the options of one output format: each
// needs its format, and takes the values diskimage.Subformats lists.
// Defaults are not written into the options (Configure may run again on
// the same Config): subformat, ovaCPUs and ovaMemory apply them.
func (c *Config) checkFormatOptions() []error {
	var errs []error
	needs := func(option string, set bool, formats ...string) {
		for _, f := range formats {
			if c.Format == f {
				return
			}
		}
		if set {
			errs = append(errs, fmt.Errorf("%s needs format = \"%s\", not %q", option, strings.Join(formats, `" or "`), c.Format))
		}
	}
	needs("vmdk_subformat", c.VMDKSubformat != "", "vmdk", formatOVA)
	needs("vpc_subformat", c.VPCSubformat != "", "vpc")
	needs("ova_cpus", c.OVACPUs != 0, formatOVA)
	needs("ova_memory", c.OVAMemory != 0, formatOVA)
	if err := diskimage.CheckSubformat("vmdk_subformat", diskimage.VMDK, c.VMDKSubformat); err != nil {
		errs = append(errs, err)
	} else if c.Format == formatOVA && c.VMDKSubformat != "" && c.VMDKSubformat != diskimage.VMDKStreamOptimized {
		errs = append(errs, fmt.Errorf("vmdk_subformat %q: an OVA holds a %s vmdk (DSP0243; what vSphere imports)", c.VMDKSubformat, diskimage.VMDKStreamOptimized))
	}
	if err := diskimage.CheckSubformat("vpc_subformat", diskimage.VPC, c.VPCSubformat); err != nil {
		errs = append(errs, err)
	}
	if c.OVACPUs < 0 {
		errs = append(errs, fmt.Errorf("ova_cpus %d: at least 1", c.OVACPUs))
	}
	if c.OVAMemory < 0 {
		errs = append(errs, fmt.Errorf("ova_memory %d: MiB, at least 1", c.OVAMemory))
	}
	if c.Format == formatOVA && c.Output != "" && !strings.HasSuffix(c.Output, ".ova") {
		errs = append(errs, fmt.Errorf("output %q: an OVA's name ends in .ova (importers look for it)", c.Output))
	}
	return errs
}

// subformat is what the conversion to the output's format is given: the
// option, else the format's default (the first of diskimage.Subformats).
func (c *Config) subformat() string {
	option, f := "", diskimage.Format(c.Format)
	switch c.Format {
	case "vmdk", formatOVA:
		option, f = c.VMDKSubformat, diskimage.VMDK
	case "vpc":
		option = c.VPCSubformat
	default:
		return ""
	}
	if option == "" {
		return diskimage.Subformats[f][0]
	}
	return option
}

// ovaCPUs and ovaMemory are the OVA's virtual machine: the options, else
// the defaults.
func (c *Config) ovaCPUs() int   { return cmp.Or(c.OVACPUs, defaultOVACPUs) }
func (c *Config) ovaMemory() int { return cmp.Or(c.OVAMemory, defaultOVAMemory) }

// alignForAzure rounds the virtual size of src, the trimmed image (ours,
// never the input), up to a whole MiB before a fixed VHD is written from
// it: Azure refuses a VHD whose virtual size is not "aligned to 1 MB"
// ("Prepare a Linux VHD for Azure", which does the same with qemu-img
// resize before converting).
func alignForAzure(ctx context.Context, ui packersdk.Ui, src string, srcFmt diskimage.Format) error {
	info, err := diskimage.Inspect(ctx, src)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	size, err := diskimage.AlignVirtualSize(ctx, src, srcFmt)
	if err != nil {
		return fmt.Errorf("rounding the disk up to a whole MiB for a fixed VHD: %w", err)
	}
	if size != info.VirtualSize {
		ui.Say(fmt.Sprintf("Grew the disk from %s (%d bytes) to %s, a whole number of MiB as Azure requires of a fixed VHD",
			diskimage.FormatSize(info.VirtualSize), info.VirtualSize, diskimage.FormatSize(size)))
	}
	return nil
}

// firmwareOf reads the trimmed disk's partition table for the OVA's
// firmware ("" when it cannot be read: the importer's default).
func firmwareOf(ui packersdk.Ui, raw string) string {
	t, err := partition.Read(raw)
	if err != nil {
		ui.Say(fmt.Sprintf("The OVA names no firmware (the importer's default, BIOS): %v", err))
		return ""
	}
	fw := ova.FirmwareOf(t)
	if fw != "" {
		ui.Say(fmt.Sprintf("The OVA's virtual machine boots with %s firmware (from the disk's %s partition table)", strings.ToUpper(fw), t.Kind))
	}
	return fw
}

// writeOVA converts src (of format srcFmt) to a streamOptimized vmdk in a
// working directory beside out and packs it into the OVA out; the vmdk
// is then removed (it is inside the OVA). The working directory is
// journaled: a killed build's is reaped.
func (p *PostProcessor) writeOVA(ctx context.Context, ui packersdk.Ui, journal *cleanup.Journal, src string, srcFmt diskimage.Format, out, firmware string, rs *repro.Source) (err error) {
	c := &p.config
	start := time.Now()
	vm := ova.VM{Name: strings.TrimSuffix(filepath.Base(out), ".ova"), CPUs: c.ovaCPUs(), MemoryMiB: c.ovaMemory(), Firmware: firmware}
	if err := vm.Check(); err != nil {
		return fmt.Errorf("output %s: %w", out, err)
	}
	work := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".d")
	h, err := journal.Take(cleanup.FileEntry(work))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, journal.Release(h)) }()
	if err := os.Mkdir(work, 0o755); err != nil {
		return err
	}
	vmdk := filepath.Join(work, vm.DiskName())
	ui.Say("Converting to vmdk (streamOptimized) for the OVA...")
	bar := packerglue.NewPercentBar(ui, "conversion to vmdk (streamOptimized)")
	err = diskimage.Convert(ctx, src, srcFmt, vmdk, diskimage.VMDK, diskimage.ConvertOptions{
		Subformat: diskimage.VMDKStreamOptimized,
		Progress:  bar.SetPercent,
		Repro:     rs,
	})
	bar.Close()
	if err != nil {
		return fmt.Errorf("converting to vmdk: %w", err)
	}
	info, err := diskimage.Inspect(ctx, vmdk)
	if err != nil {
		return fmt.Errorf("%s: %w", vmdk, err)
	}
	opts := ova.Options{}
	if rs.Enabled() {
		opts.ModTime = time.Unix(rs.Epoch(), 0)
	}
	fi, err := os.Stat(vmdk)
	if err != nil {
		return err
	}
	cpus := "CPUs"
	if vm.CPUs == 1 {
		cpus = "CPU"
	}
	ui.Say(fmt.Sprintf("Packing the OVA (%s vmdk, %d %s, %d MiB of memory)...", diskimage.FormatSize(fi.Size()), vm.CPUs, cpus, vm.MemoryMiB))
	pb := packerglue.NewProgressBar(ui, "OVA", fi.Size())
	opts.Progress = func(done, _ int64) { pb.Set(done) }
	err = ova.Write(ctx, out, vm, ova.Disk{Path: vmdk, Capacity: info.VirtualSize}, opts)
	pb.Close()
	if err != nil {
		return err
	}
	fi, _ = os.Stat(out)
	ui.Say(fmt.Sprintf("Wrote %s (%s) in %s", out, diskimage.FormatSize(fi.Size()), time.Since(start).Round(time.Millisecond)))
	return nil
}
