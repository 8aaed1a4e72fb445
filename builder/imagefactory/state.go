package imagefactory

import (
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// Keys of the state bag shared by the steps.
const (
	stateBaseImagePath = "base_image_path" // the downloaded or local base image
	stateDiskPath      = "disk_path"       // the raw working disk
	stateBaseFormat    = "base_format"     // the base image's detected format
	stateBaseSize      = "base_size"       // int64, the base image's virtual size in bytes
	stateJournal       = "journal"         // *cleanup.Journal
	stateGrown         = "grown_partition" // *partition.Partition grown by disk_size, or nil
	stateMountPath     = "mount_path"      // string, the root's mount point
	stateArtifactPath  = "artifact_path"   // the final image file
	stateSession       = "session"         // *session.Session: loops and mounts of the working disk
	stateVirtualSize   = "virtual_size"    // int64, the working disk's size in bytes
	stateWorkOverlay   = "work_overlay"    // *workOverlay: use_backing_file's working disk, when exported over FUSE
	stateChrootMounts  = "chroot_mounts"   // []string, image paths of the chroot's own mounts
	stateOutputDirMade = "output_dir_made" // bool, the output directory is this build's

	// qemu strategy
	stateQemuDir    = "qemu_dir"    // the machine's run directory (QMP socket, seed, OVMF vars)
	stateSSHKey     = "ssh_key"     // qemu.Key, this build's
	stateInstanceID = "instance_id" // cloud-init instance id
	stateGuest      = "guest"       // *qemu.GuestState, recorded before the boot
	stateKernel     = "kernel"      // [3]string: kernel, initrd, cmdline ("" = boot the disk)
	stateCPUModel   = "cpu_model"   // [2]string: QEMU's -cpu, and why
	stateSeed       = "seed"        // the cidata ISO
	stateMachine    = "machine"     // *qemu.Machine
	stateSSHPort    = "ssh_port"    // int, forwarded to the guest's 22
	stateGuestMark  = "guest_mark"  // time.Time, the guest's clock when SSH answered (absent: not read)

	// disks from a root tree
	stateRootTree   = "root_tree"   // string, the root tree a disk is made from
	stateTreeKernel = "tree_kernel" // string, the kernel inside the tree, "" when kernel is given
	stateTreeInitrd = "tree_initrd" // string, its initrd inside the tree, or ""
	stateTreeArch   = "tree_arch"   // arch.Arch of the tree's binaries, when they say
	stateQemuTarget = "qemu_target" // qemuTarget: the machine for the image's architecture
	stateRootUUID   = "root_uuid"   // string, the UUID of the root filesystem made from a tree
	stateRootLabel  = "root_label"  // string, its label
	// source_rootfs as a filesystem image
	stateSourceFS      = "source_fs"      // fsimage.Info of the image
	stateSourceMount   = "source_mount"   // *fsimage.Mounted, released once the disk is made
	stateKernelModules = "kernel_modules" // kernelModules, for kernel

	// the bill of materials
	stateSBOMBase       = "sbom_base"       // *sbom.Inventory of the image before provisioning
	stateSBOM           = "sbom"            // *sbom.Inventory of the image after provisioning
	stateSBOMPath       = "sbom_path"       // string, the SPDX file beside the artifact
	stateProvisionStart = "provision_start" // time.Time, when the provisioners started
)

// generatedDataKeys are exposed to provisioners as build.<Key> (HCL2) or
// {{ build `Key` }}, so that, for example, Ansible's chroot connection can
// use the mount path.
var generatedDataKeys = []string{"MountPath", "Device", "RootPartition", "DiskPath", "Architecture"}

// halt records err as the build's error, shows it, and halts.
func halt(state multistep.StateBag, err error) multistep.StepAction {
	state.Put("error", err)
	state.Get("ui").(packersdk.Ui).Error(err.Error())
	return multistep.ActionHalt
}

// haltf is halt with a formatted message.
func haltf(state multistep.StateBag, format string, a ...interface{}) multistep.StepAction {
	return halt(state, fmt.Errorf(format, a...))
}

func uiOf(state multistep.StateBag) packersdk.Ui { return state.Get("ui").(packersdk.Ui) }
func configOf(state multistep.StateBag) *Config  { return state.Get("config").(*Config) }

// putGenerated adds a value to the generated data provisioners see.
func putGenerated(state multistep.StateBag, key string, value interface{}) {
	data, _ := state.GetOk("generated_data")
	m, _ := data.(map[string]interface{})
	if m == nil {
		m = map[string]interface{}{}
	}
	m[key] = value
	state.Put("generated_data", m)
}
