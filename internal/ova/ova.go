// Package ova writes OVA packages: an OVF descriptor, its SHA-256
// manifest and one streamOptimized vmdk in a ustar archive, the form
// VMware (vSphere, ESXi, Workstation, Fusion) and VirtualBox import. It
// knows nothing of how the disk was made.
//
// Sources: DMTF DSP0243 "Open Virtualization Format Specification" 1.1
// (5.3: the TAR archive, its member order and ustar; 9: the descriptor's
// sections) and 2.x (5.2: SHA256 manifest lines); CIM's RASD and VSSD
// schemas (DSP8023, the ResourceType numbers); VMware's "Virtual Disk
// Format 5.0" (the streamOptimized vmdk an OVF disk references).
package ova

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/partition"
)

// StreamOptimized is the ovf:format URI of a streamOptimized vmdk
// (VMware's OVF documentation; ovftool writes it).
const StreamOptimized = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"

// Firmware values of VM.Firmware.
const (
	BIOS = "bios"
	EFI  = "efi"
)

// VM is the virtual machine the descriptor asks the importer to create.
type VM struct {
	Name      string // the VirtualSystem's id and name, and the members' base name
	CPUs      int    // virtual CPUs, >= 1
	MemoryMiB int    // memory in MiB, >= 1
	// Firmware is EFI, BIOS or "" (not known: the importer's default,
	// BIOS in VMware and VirtualBox). EFI is written as VMware's
	// vmw:Config firmware key, which other importers ignore.
	Firmware string
}

// Disk is the package's one disk: a streamOptimized vmdk file and the
// size the guest sees, in bytes (qemu-img's virtual size).
type Disk struct {
	Path     string
	Capacity int64
}

// Member names. The vmdk is named as ovftool names an exported disk.
func (vm VM) ovfName() string  { return vm.Name + ".ovf" }
func (vm VM) mfName() string   { return vm.Name + ".mf" }
func (vm VM) DiskName() string { return vm.Name + "-disk1.vmdk" }

// validName keeps member names ustar-safe (100 bytes) and usable as an
// OVF href (a URI reference) without escaping.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

// Check validates vm; the errors name the field.
func (vm VM) Check() error {
	var errs []error
	if !validName.MatchString(vm.Name) || len(vm.DiskName()) > 100 {
		errs = append(errs, fmt.Errorf("the OVA's name %q must be letters, digits and . _ + - (at most 89 characters)", vm.Name))
	}
	if vm.CPUs < 1 {
		errs = append(errs, fmt.Errorf("%d CPUs: at least 1", vm.CPUs))
	}
	if vm.MemoryMiB < 1 {
		errs = append(errs, fmt.Errorf("%d MiB of memory: at least 1", vm.MemoryMiB))
	}
	switch vm.Firmware {
	case "", BIOS, EFI:
	default:
		errs = append(errs, fmt.Errorf("firmware %q is not one of %s, %s", vm.Firmware, BIOS, EFI))
	}
	return errors.Join(errs...)
}

// Partition type of an EFI system partition and of GRUB's BIOS boot
// partition (UEFI 2.x 5.3.3; GRUB's manual, "BIOS installation"), lower
// case as partition.Table gives them.
const (
	gptESP      = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	gptBIOSBoot = "21686148-6449-6e6f-744e-656564454649"
	mbrESP      = 0xef
)

// FirmwareOf tells the firmware a disk boots with from its partition
// table: EFI for a disk with an EFI system partition and no BIOS boot
// partition, BIOS for one with a BIOS boot partition or an MBR without an
// ESP, "" when the table says nothing (no table: the importer's default).
// A disk with both boots either way; BIOS is then the choice, every
// importer's default.
func FirmwareOf(t *partition.Table) string {
	esp, biosBoot := false, false
	for _, p := range t.Partitions {
		esp = esp || p.TypeGUID == gptESP || t.Kind == partition.MBR && p.TypeMBR == mbrESP
		biosBoot = biosBoot || p.TypeGUID == gptBIOSBoot
	}
	switch {
	case t.Kind == partition.None:
		return ""
	case esp && !biosBoot:
		return EFI
	default:
		return BIOS
	}
}

// descriptor is the OVF 1.0 envelope (the namespace VMware and VirtualBox
// both read): one file, one disk, one virtual system with CPUs, memory, a
// SCSI controller (LSI Logic, which both emulate and Linux drives with
// mptspi), the disk on it, and an E1000 NIC on "VM Network". RASD
// elements are in the schema's (alphabetical) order.
var descriptor = template.Must(template.New("ovf").Funcs(template.FuncMap{"x": escape}).Parse(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:id="file1" ovf:href="{{x .DiskName}}" ovf:size="{{.FileSize}}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{{.Capacity}}" ovf:capacityAllocationUnits="byte" ovf:format="{{.Format}}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The network of the first NIC</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{{x .Name}}">
    <Info>A virtual machine</Info>
    <Name>{{x .Name}}</Name>
    <OperatingSystemSection ovf:id="36" vmw:osType="otherLinux64Guest">
      <Info>The guest operating system (CIM OsType 36: Linux)</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{{x .Name}}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{{.CPUs}} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{{.CPUs}}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory size</rasd:Description>
        <rasd:ElementName>{{.MemoryMiB}} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{{.MemoryMiB}}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>E1000 ethernet adapter on "VM Network"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
{{- if eq .Firmware "efi"}}
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
{{- end}}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`))

func escape(s string) (string, error) {
	var b strings.Builder
	err := xml.EscapeText(&b, []byte(s))
	return b.String(), err
}

// Descriptor is the OVF descriptor of vm with its disk: a vmdk file of
// fileSize bytes holding a disk of capacity bytes.
func Descriptor(vm VM, fileSize, capacity int64) ([]byte, error) {
	if err := vm.Check(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err := descriptor.Execute(&b, struct {
		VM
		DiskName           string
		FileSize, Capacity int64
		Format             string
	}{vm, vm.DiskName(), fileSize, capacity, StreamOptimized})
	return b.Bytes(), err
}

// Options tune Write.
type Options struct {
	// ModTime of the members; zero: now. A reproducible build sets its epoch.
	ModTime time.Time
	// Progress, if set, receives the bytes written so far and the total.
	Progress func(done, total int64)
}

// Write makes the OVA at out (written as out+".part", renamed when whole;
// removed on error or when ctx is cancelled): members NAME.ovf, NAME.mf,
// NAME-disk1.vmdk, in that order, ustar. DSP0243 5.3 puts the descriptor
// first, then either the manifest (and certificate) or the files in
// References order with the manifest at the end; the manifest second lets
// an importer that streams the archive check each file as it arrives, as
// ovftool's own OVAs do. The manifest has one `SHA256(name)= hex` line per
// other member (DSP0243 2.x 5.2).
func Write(ctx context.Context, out string, vm VM, disk Disk, opts Options) (err error) {
	fi, err := os.Stat(disk.Path)
	if err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	ovf, err := Descriptor(vm, fi.Size(), disk.Capacity)
	if err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	diskSum, err := sha256File(ctx, disk.Path)
	if err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	ovfSum := sha256.Sum256(ovf)
	mf := fmt.Sprintf("SHA256(%s)= %s\nSHA256(%s)= %s\n", vm.ovfName(), hex.EncodeToString(ovfSum[:]), vm.DiskName(), diskSum)

	mtime := opts.ModTime
	if mtime.IsZero() {
		mtime = time.Now()
	}
	part := out + ".part"
	f, err := os.Create(part)
	if err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(part)
		}
	}()
	tw := tar.NewWriter(f)
	header := func(name string, size int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: mtime.Truncate(time.Second), Format: tar.FormatUSTAR}
	}
	for _, m := range []struct {
		name string
		data []byte
	}{{vm.ovfName(), ovf}, {vm.mfName(), []byte(mf)}} {
		if err := tw.WriteHeader(header(m.name, int64(len(m.data)))); err != nil {
			return fmt.Errorf("OVA %s: %s: %w", out, m.name, err)
		}
		if _, err := tw.Write(m.data); err != nil {
			return fmt.Errorf("OVA %s: %s: %w", out, m.name, err)
		}
	}
	if err := tw.WriteHeader(header(vm.DiskName(), fi.Size())); err != nil {
		return fmt.Errorf("OVA %s: %s: %w", out, vm.DiskName(), err)
	}
	in, err := os.Open(disk.Path)
	if err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	defer in.Close()
	w := &progressWriter{w: tw, ctx: ctx, total: fi.Size(), fn: opts.Progress}
	if _, err := io.Copy(w, in); err != nil {
		return fmt.Errorf("OVA %s: %s: %w", out, vm.DiskName(), err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	if err := os.Rename(part, out); err != nil {
		return fmt.Errorf("OVA %s: %w", out, err)
	}
	return nil
}

func sha256File(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(&progressWriter{w: h, ctx: ctx}, f); err != nil {
		return "", fmt.Errorf("sha256 of %s: %w", filepath.Base(path), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// progressWriter reports bytes written and stops when ctx is done.
type progressWriter struct {
	w           io.Writer
	ctx         context.Context
	done, total int64
	fn          func(done, total int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
	return n, err
}
