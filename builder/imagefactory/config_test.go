package imagefactory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/arch"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// kvmHangs fakes hostcap's probe on a host like the CI's: /dev/kvm opens
// but no guest gets far under it.
func kvmHangs(time.Duration) hostcap.Verdict {
	return hostcap.Verdict{Reason: "/dev/kvm opens but a test guest did not reach long mode in 5s"}
}

func TestConfigPrepare(t *testing.T) {
	defer hostcap.SetProber(kvmHangs)()
	t.Setenv("SOURCE_DATE_EPOCH", "")
	// base is a minimal valid configuration, as Packer passes it.
	base := func() map[string]interface{} {
		return map[string]interface{}{
			"packer_build_name": "web",
			"base_image":        "debian-12.qcow2",
		}
	}
	tests := []struct {
		name    string
		set     map[string]interface{}
		unset   []string
		check   func(t *testing.T, c *Config)
		wantErr []string // each must appear in the error; none: valid
	}{
		{
			name: "sbom off",
			set:  map[string]interface{}{"sbom": false},
			check: func(t *testing.T, c *Config) {
				if c.SBOM {
					t.Error("sbom = false left it on")
				}
			},
		},
		{
			name: "minimal, defaults filled",
			check: func(t *testing.T, c *Config) {
				for _, f := range []struct{ name, got, want string }{
					{"strategy", c.Strategy, StrategyChroot},
					{"format", c.Format, "raw"},
					{"output_directory", c.OutputDirectory, "output-web"},
					{"image_name", c.ImageName, "web"},
					{"resolv_conf", c.ResolvConf, ResolvCopy},
					{"fat_mounts", c.FATMounts, "staged"},
					{"command_wrapper", c.CommandWrapper, "{{.Command}}"},
					{"mount_path", c.MountPath, ""},
				} {
					if f.got != f.want {
						t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
					}
				}
				if c.RootPartition != 0 || c.AllowServiceStarts || c.DiskSize != "" || c.repro.Enabled() || !c.SBOM {
					t.Errorf("unexpected defaults: %+v", c)
				}
				got, err := c.wrapper()("chroot /mnt /bin/sh -c 'echo hi'")
				if err != nil || got != "chroot /mnt /bin/sh -c 'echo hi'" {
					t.Errorf("default wrapper = %q, %v", got, err)
				}
			},
		},
		{
			name: "architecture pinned",
			set:  map[string]interface{}{"architecture": "arm64"},
			check: func(t *testing.T, c *Config) {
				if c.Architecture != "arm64" {
					t.Errorf("architecture = %q", c.Architecture)
				}
			},
		},
		{
			name:    "architecture in another vocabulary",
			set:     map[string]interface{}{"architecture": "aarch64"},
			wantErr: []string{`architecture "aarch64" is not one of`, "arm64", "dpkg --print-architecture"},
		},
		{
			name:  "no build name",
			unset: []string{"packer_build_name"},
			check: func(t *testing.T, c *Config) {
				if c.ImageName != "image" || c.OutputDirectory != "output-" {
					t.Errorf("image_name %q, output_directory %q", c.ImageName, c.OutputDirectory)
				}
			},
		},
		{
			name: "everything set",
			set: map[string]interface{}{
				"base_image":           "https://example.com/debian.qcow2",
				"base_image_checksum":  "sha256:0123",
				"strategy":             "chroot",
				"output_directory":     "out",
				"image_name":           "img",
				"format":               "qcow2",
				"disk_size":            "8G",
				"root_partition":       2,
				"required_mounts":      []string{"/boot"},
				"mount_options":        []string{"noatime"},
				"mount_path":           "/mnt/{{.BuildName}}",
				"chroot_mounts":        [][]string{{"none", "", "/run"}, {"tmpfs", "tmpfs", "/var/cache"}},
				"resolv_conf":          "keep",
				"allow_service_starts": true,
				"copy_files":           []string{"/etc/hosts"},
				"pre_mount_commands":   []string{"echo {{.Device}}"},
				"command_wrapper":      "sudo {{.Command}}",
				"environment":          map[string]string{"FOO": "bar", "_X1": "y"},
			},
			check: func(t *testing.T, c *Config) {
				if c.Format != "qcow2" || c.OutputDirectory != "out" || c.ImageName != "img" || c.RootPartition != 2 ||
					c.ResolvConf != ResolvKeep || !c.AllowServiceStarts || len(c.ChrootMounts) != 2 || c.Environment["FOO"] != "bar" {
					t.Errorf("settings not decoded: %+v", c)
				}
				// Rendered later, during the build: left as written.
				if c.MountPath != "/mnt/{{.BuildName}}" || c.PreMountCommands[0] != "echo {{.Device}}" {
					t.Errorf("mount_path %q, pre_mount_commands %q: interpolated too early", c.MountPath, c.PreMountCommands)
				}
				got, err := c.wrapper()("ls")
				if err != nil || got != "sudo ls" {
					t.Errorf("wrapper = %q, %v", got, err)
				}
				p, err := c.renderMountPath()
				if err != nil || p != "/mnt/web" {
					t.Errorf("renderMountPath = %q, %v", p, err)
				}
			},
		},
		{name: "file URL needs no checksum", set: map[string]interface{}{"base_image": "file:///srv/debian.qcow2"}},
		{name: "URL with checksum none", set: map[string]interface{}{"base_image": "http://example.com/x.img", "base_image_checksum": "none"}},
		{name: "resolv_conf bind", set: map[string]interface{}{"resolv_conf": "bind"}},
		{name: "fat_mounts placeholder", set: map[string]interface{}{"fat_mounts": "placeholder"}},
		{name: "disk_size in bytes", set: map[string]interface{}{"disk_size": "1073741824"}},

		{name: "no base_image", unset: []string{"base_image"}, wantErr: []string{"exactly one of base_image (a disk image), source_rootfs (a root tree) and bootstrap (a tree made by debootstrap) is required; 0 given"}},
		{name: "base_image and source_rootfs", set: map[string]interface{}{"source_rootfs": "/srv/tree"}, wantErr: []string{"exactly one of base_image"}},
		{name: "source_rootfs defaults", unset: []string{"base_image"}, set: map[string]interface{}{"source_rootfs": "tree.tar.zst"},
			check: func(t *testing.T, c *Config) {
				if c.PartitionTable != "gpt" || c.RootFS != "ext4" || c.FreeSpace != "256M" || c.FstabBy != "label" ||
					c.KernelCmdline != "console=tty0 console=ttyS0,115200" || !filepath.IsAbs(c.SourceRootfs) {
					t.Errorf("defaults: %+v", c)
				}
			}},
		{name: "bootstrap", unset: []string{"base_image"}, set: map[string]interface{}{"bootstrap": map[string]interface{}{"tool": "debootstrap", "suite": "bookworm", "include": []string{"linux-image-amd64"}}, "partition_table": "mbr", "root_fs": "xfs", "disk_size": "2G"},
			check: func(t *testing.T, c *Config) {
				if c.Bootstrap == nil || c.Bootstrap.Suite != "bookworm" || c.Bootstrap.CacheDir == "" || c.PartitionTable != "mbr" || c.RootFS != "xfs" {
					t.Errorf("bootstrap: %+v %+v", c, c.Bootstrap)
				}
			}},
		{name: "bootstrap arm64", unset: []string{"base_image"}, set: map[string]interface{}{"bootstrap": map[string]interface{}{"tool": "debootstrap", "suite": "bookworm", "arch": "arm64", "include": []string{"linux-image-arm64", "grub-efi-arm64-bin"}}},
			check: func(t *testing.T, c *Config) {
				if c.PartitionTable != "gpt" || c.KernelCmdline != "console=tty0 console=ttyAMA0,115200" || c.Bootstrap.Arch != "arm64" {
					t.Errorf("bootstrap arm64: %+v %+v", c, c.Bootstrap)
				}
			}},
		{name: "bootstrap arm64 without its GRUB", unset: []string{"base_image"}, set: map[string]interface{}{"bootstrap": map[string]interface{}{"tool": "debootstrap", "suite": "bookworm", "arch": "arm64", "include": []string{"linux-image-arm64"}}},
			wantErr: []string{`bootstrap.arch "arm64": include needs "grub-efi-arm64-bin": the disk's GRUB arm64-efi is made from the tree's own modules`}},
		{name: "bootstrap arm64 mbr, bad arch", unset: []string{"base_image"}, set: map[string]interface{}{"bootstrap": map[string]interface{}{"tool": "debootstrap", "suite": "bookworm", "arch": "arm64"}, "partition_table": "mbr"},
			wantErr: []string{`bootstrap.arch "arm64": no bootable disk with partition_table "mbr" for arm64: an arm64 disk boots through UEFI only`}},
		{name: "bootstrap arch contradicts architecture", unset: []string{"base_image"}, set: map[string]interface{}{"bootstrap": map[string]interface{}{"tool": "debootstrap", "suite": "bookworm", "arch": "arm64"}, "architecture": "amd64"},
			wantErr: []string{`architecture = "amd64" contradicts bootstrap.arch = "arm64"`}},
		{name: "architecture of a host-arch bootstrap", unset: []string{"base_image"}, set: map[string]interface{}{"bootstrap": map[string]interface{}{"tool": "debootstrap", "suite": "bookworm"}, "architecture": "arm64"},
			wantErr: []string{`architecture = "arm64", but bootstrap makes a tree of this host's architecture (amd64): set bootstrap.arch = "arm64"`}},
		{name: "bootstrap unknown arch", unset: []string{"base_image"}, set: map[string]interface{}{"bootstrap": map[string]interface{}{"tool": "debootstrap", "suite": "bookworm", "arch": "aarch64"}},
			wantErr: []string{`bootstrap.arch "aarch64" is not an architecture Debian names; use one of [amd64 arm64`}},
		{name: "qemu, a user's net0", set: map[string]interface{}{"strategy": "qemu", "qemuargs": [][]string{{"-netdev", "socket,id=net0"}}},
			wantErr: []string{"qemuargs: -netdev socket,id=net0: net0 must be user-mode networking"}},
		{name: "bootstrap without suite, other tool", unset: []string{"base_image"}, set: map[string]interface{}{"bootstrap": map[string]interface{}{"tool": "mmdebstrap"}},
			wantErr: []string{`bootstrap.tool "mmdebstrap" is not supported; use "debootstrap"`, "bootstrap.suite is required"}},
		{name: "tree options", unset: []string{"base_image"}, set: map[string]interface{}{"source_rootfs": "/t", "partition_table": "apm", "root_fs": "btrfs", "fstab_by": "partuuid", "free_space": "lots", "initrd": "/i", "kernel_modules": "/m"},
			wantErr: []string{`partition_table "apm" is not supported`, `root_fs "btrfs" is not supported`, `fstab_by "partuuid" is not supported`, "free_space: ", "initrd needs kernel",
				"kernel_modules needs kernel"}},
		{name: "kernel from the host for a tree without one", unset: []string{"base_image"},
			set: map[string]interface{}{"source_rootfs": "ami.img", "kernel": "vmlinuz-6.1.0-50-amd64", "initrd": "/boot/initrd.img", "kernel_modules": "modules"},
			check: func(t *testing.T, c *Config) {
				if !filepath.IsAbs(c.SourceRootfs) || !filepath.IsAbs(c.Kernel) || c.Initrd != "/boot/initrd.img" || !filepath.IsAbs(c.KernelModules) || c.rootFSGiven || c.RootFS != "ext4" {
					t.Errorf("paths not made absolute, or root_fs not defaulted: %+v", c)
				}
			}},
		{name: "tree options on a base image", set: map[string]interface{}{"root_fs": "xfs", "kernel": "/vmlinuz", "kernel_modules": "/m"},
			wantErr: []string{"root_fs applies only to a disk made from a root tree", "kernel applies only to a disk made from a root tree",
				"kernel_modules applies only to a disk made from a root tree"}},
		{name: "use_backing_file defaults to qcow2", set: map[string]interface{}{"use_backing_file": true},
			check: func(t *testing.T, c *Config) {
				if c.Format != "qcow2" {
					t.Errorf("format %q", c.Format)
				}
			}},
		{name: "use_backing_file raw", set: map[string]interface{}{"use_backing_file": true, "format": "raw"},
			wantErr: []string{`use_backing_file makes a qcow2 overlay; format "raw" cannot have a backing file`}},
		{name: "use_backing_file URL", set: map[string]interface{}{"use_backing_file": true, "base_image": "https://example.com/x.qcow2", "base_image_checksum": "none"},
			wantErr: []string{"use_backing_file needs base_image to be a local file"}},
		{name: "qcow2_compat 0.10", set: map[string]interface{}{"format": "qcow2", "qcow2_compat": "0.10"}},
		{name: "qcow2_compat on raw", set: map[string]interface{}{"qcow2_compat": "0.10"},
			wantErr: []string{`qcow2_compat applies to format = "qcow2" only, not "raw"`}},
		{name: "qcow2_compat unknown", set: map[string]interface{}{"format": "qcow2", "qcow2_compat": "1.0"},
			wantErr: []string{`qcow2_compat "1.0" is not supported; use "1.1" (the default, QEMU 1.1 and later) or "0.10" (older QEMU)`}},
		{name: "qcow2_compat with use_backing_file", set: map[string]interface{}{"use_backing_file": true, "qcow2_compat": "0.10"},
			wantErr: []string{"qcow2_compat is not supported with use_backing_file"}},
		{name: "URL without checksum", set: map[string]interface{}{"base_image": "https://example.com/debian.qcow2"},
			wantErr: []string{`base_image_checksum is required when base_image is a URL (https://example.com/debian.qcow2); use "none" to skip the check`}},
		{name: "upper-case URL without checksum", set: map[string]interface{}{"base_image": "HTTP://example.com/x.img"},
			wantErr: []string{"base_image_checksum is required"}},
		{name: "bad strategy", set: map[string]interface{}{"strategy": "vbox"}, wantErr: []string{`strategy "vbox" is not supported; use "chroot" or "qemu"`}},
		{
			name: "qemu defaults",
			set:  map[string]interface{}{"strategy": "qemu"},
			check: func(t *testing.T, c *Config) {
				if c.Accelerator != "auto" || c.accel != "tcg" || c.accelReason != kvmHangs(0).Reason ||
					c.CPUs != 1 || c.Memory != 1024 || c.Firmware != "bios" ||
					c.Comm.Type != "ssh" || c.Comm.SSHUsername != "root" || c.Comm.SSHHost != "127.0.0.1" ||
					c.ShutdownTimeout != 5*time.Minute || c.QemuBinary == "" || c.BootKernel != "" {
					t.Errorf("qemu defaults: %+v, comm %+v", c.QemuConfig, c.Comm)
				}
			},
		},
		{
			name: "qemu, kernel from the image, uefi",
			set: map[string]interface{}{"strategy": "qemu", "boot_kernel": "image", "firmware": "uefi", "accelerator": "tcg",
				"cpus": 2, "memory": 2048, "qemuargs": [][]string{{"-no-hpet"}}, "ssh_username": "debian",
				"user_data": "#cloud-config\n# {{ .SSHPublicKey }}", "shutdown_command": "poweroff", "shutdown_timeout": "30s"},
			check: func(t *testing.T, c *Config) {
				if c.BootInitrd != "image" || c.OVMFCode != "" || c.CPUs != 2 || c.Comm.SSHUsername != "debian" ||
					c.ShutdownTimeout != 30*time.Second || !strings.Contains(c.UserData, "{{ .SSHPublicKey }}") {
					t.Errorf("qemu settings: %+v", c.QemuConfig)
				}
			},
		},
		{name: "qemu uefi, firmware file missing", set: map[string]interface{}{"strategy": "qemu", "firmware": "uefi", "ovmf_vars": "/nonexistent/OVMF_VARS.fd"},
			wantErr: []string{"firmware uefi: stat /nonexistent/OVMF_VARS.fd: no such file or directory (set ovmf_code and ovmf_vars to the firmware's files)"}},
		{name: "qemu bad options", set: map[string]interface{}{"strategy": "qemu", "accelerator": "hvf", "firmware": "coreboot",
			"boot_initrd": "/boot/initrd.img", "boot_cmdline": "quiet", "communicator": "winrm", "qemuargs": [][]string{{}}},
			wantErr: []string{`accelerator "hvf" is not supported`, `firmware "coreboot" is not supported`,
				"boot_initrd and boot_cmdline need boot_kernel", `communicator "winrm"`, "qemuargs[0] is empty"}},
		{name: "qemu, kvm where KVM cannot run a guest", set: map[string]interface{}{"strategy": "qemu", "accelerator": "kvm"},
			wantErr: []string{`accelerator = "kvm": KVM cannot run a guest on this host: /dev/kvm opens but a test guest did not reach long mode in 5s; set accelerator = "tcg"`}},
		{name: "qemu missing kernel file", set: map[string]interface{}{"strategy": "qemu", "boot_kernel": "/nonexistent/vmlinuz"},
			wantErr: []string{"kernel: stat /nonexistent/vmlinuz: no such file or directory"}},
		{name: "qemu ssh_host elsewhere", set: map[string]interface{}{"strategy": "qemu", "ssh_host": "10.0.0.1"},
			wantErr: []string{`ssh_host "10.0.0.1": the qemu strategy forwards SSH on 127.0.0.1 only`}},
		{name: "qemu boot_stall_timeout", set: map[string]interface{}{"strategy": "qemu", "boot_stall_timeout": "20s"},
			check: func(t *testing.T, c *Config) {
				if c.BootStallTimeout != 20*time.Second {
					t.Errorf("boot_stall_timeout = %s, want 20s", c.BootStallTimeout)
				}
			}},
		{name: "qemu boot_stall_timeout default", set: map[string]interface{}{"strategy": "qemu", "boot_stall_timeout": "0s"},
			check: func(t *testing.T, c *Config) {
				if c.BootStallTimeout != 5*time.Minute {
					t.Errorf("boot_stall_timeout = %s, want the default 5m", c.BootStallTimeout)
				}
			}},
		{name: "qemu negative boot_stall_timeout", set: map[string]interface{}{"strategy": "qemu", "boot_stall_timeout": "-1m"},
			wantErr: []string{"boot_stall_timeout -1m0s must be positive (or unset for the default 5m)"}},
		{name: "bad format", set: map[string]interface{}{"format": "vmdk"}, wantErr: []string{`format "vmdk" is not supported; use raw or qcow2`}},
		{name: "bad disk_size", set: map[string]interface{}{"disk_size": "eight gigs"}, wantErr: []string{"disk_size: "}},
		{name: "negative disk_size", set: map[string]interface{}{"disk_size": "-8G"}, wantErr: []string{"disk_size: "}},
		{name: "negative root_partition", set: map[string]interface{}{"root_partition": -1},
			wantErr: []string{"root_partition must be a partition number (1, 2, ...), not -1"}},
		{name: "chroot_mounts arity", set: map[string]interface{}{"chroot_mounts": [][]string{{"tmpfs", "/run"}, {"proc", "proc", "/proc", "x"}}},
			wantErr: []string{"chroot_mounts[0] must be [fstype, source, target], got 2 values", "chroot_mounts[1] must be [fstype, source, target], got 4 values"}},
		{name: "chroot_mounts relative target", set: map[string]interface{}{"chroot_mounts": [][]string{{"tmpfs", "tmpfs", "run"}}},
			wantErr: []string{`chroot_mounts[0]: target "run" must be an absolute path inside the image`}},
		{name: "bad resolv_conf", set: map[string]interface{}{"resolv_conf": "symlink"},
			wantErr: []string{`resolv_conf "symlink" is not supported; use copy, bind or keep`}},
		{name: "bad fat_mounts", set: map[string]interface{}{"fat_mounts": "fuse"},
			wantErr: []string{`fat_mounts "fuse" is not supported; use "staged" or "placeholder"`}},
		{name: "relative copy_files", set: map[string]interface{}{"copy_files": []string{"/etc/hosts", "etc/resolv.conf"}},
			wantErr: []string{`copy_files: "etc/resolv.conf" must be an absolute host path`}},
		{name: "bad environment name", set: map[string]interface{}{"environment": map[string]string{"1FOO": "x", "A-B": "y", "OK": "z"}},
			wantErr: []string{`environment: "1FOO" is not a valid variable name`, `environment: "A-B" is not a valid variable name`}},
		{name: "image_name with slash", set: map[string]interface{}{"image_name": "sub/img"},
			wantErr: []string{`image_name "sub/img" must be a file name, not a path`}},
		{name: "source_date_epoch", set: map[string]interface{}{"source_date_epoch": "1767225600"},
			check: func(t *testing.T, c *Config) {
				if !c.repro.Enabled() || c.repro.Epoch() != 1767225600 {
					t.Errorf("repro = %+v, want epoch 1767225600", c.repro)
				}
			}},
		{name: "source_date_epoch with an xfs root", unset: []string{"base_image"}, set: map[string]interface{}{"source_rootfs": "/t", "root_fs": "xfs", "source_date_epoch": "1767225600"},
			wantErr: []string{`source_date_epoch is set, but an xfs root (root_fs = "xfs", or a source_rootfs xfs image) cannot be made reproducible: use root_fs = "ext4", or remove source_date_epoch`}},
		{name: "bad source_date_epoch", set: map[string]interface{}{"source_date_epoch": "2026-01-01"},
			wantErr: []string{`source_date_epoch: not a SOURCE_DATE_EPOCH: "2026-01-01": give seconds since 1970-01-01 UTC`}},
		{name: "several errors at once", set: map[string]interface{}{"format": "vmdk", "strategy": "vbox"},
			wantErr: []string{"format", "strategy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := base()
			for _, k := range tc.unset {
				delete(raw, k)
			}
			for k, v := range tc.set {
				raw[k] = v
			}
			var c Config
			warns, err := c.Prepare(raw)
			if len(warns) > 0 {
				t.Errorf("warnings: %v", warns)
			}
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				if tc.check != nil {
					tc.check(t, &c)
				}
				return
			}
			if err == nil {
				t.Fatalf("Prepare succeeded, want errors %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Prepare error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestConfigQemuWarnsOfChrootOptions(t *testing.T) {
	defer hostcap.SetProber(kvmHangs)()
	var c Config
	warns, err := c.Prepare(map[string]interface{}{
		"packer_build_name": "web", "base_image": "x.img", "strategy": "qemu",
		"copy_files": []string{"/etc/hosts"}, "resolv_conf": "bind",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "copy_files") || !strings.Contains(warns[1], "resolv_conf") {
		t.Errorf("warnings = %q, want copy_files and resolv_conf", warns)
	}
}

// The accelerator Prepare chooses and the one line the build shows, for
// each verdict of hostcap's probe (faked).
func TestConfigAccelerator(t *testing.T) {
	works := hostcap.Verdict{Usable: true, Reason: "a test guest reached long mode under /dev/kvm and ran 256Mi loop iterations in 120ms"}
	unproven := hostcap.Verdict{Unproven: true, Reason: "KVM is unproven: the KVM probe is not implemented on linux/arm64"}
	for _, tc := range []struct {
		name      string
		verdict   hostcap.Verdict
		requested string
		accel     string
		reason    string
		warning   string
	}{
		{"auto where KVM works", works, "", "kvm", works.Reason, ""},
		{"auto where KVM hangs", kvmHangs(0), "auto", "tcg", kvmHangs(0).Reason, ""},
		{"kvm where KVM works", works, "kvm", "kvm", works.Reason, ""},
		{"kvm where KVM is unproven", unproven, "kvm", "kvm", unproven.Reason, `accelerator = "kvm": KVM is unproven`},
		{"tcg", works, "tcg", "tcg", `asked for: accelerator = "tcg"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer hostcap.SetProber(func(time.Duration) hostcap.Verdict { return tc.verdict })()
			var c Config
			warns, err := c.Prepare(map[string]interface{}{"packer_build_name": "web", "base_image": "x.img", "strategy": "qemu", "accelerator": tc.requested})
			if err != nil {
				t.Fatal(err)
			}
			if c.accel != tc.accel || c.accelReason != tc.reason {
				t.Errorf("accelerator %q (%s), want %q (%s)", c.accel, c.accelReason, tc.accel, tc.reason)
			}
			if w := strings.Join(warns, "\n"); (tc.warning == "") != (w == "") || !strings.Contains(w, tc.warning) {
				t.Errorf("warnings %q, want %q", warns, tc.warning)
			}
		})
	}
}

// The machine the qemu strategy boots follows the image's architecture:
// for arm64 qemu-system-aarch64, UEFI with AAVMF, and TCG even where KVM
// runs a guest of the host's architecture; what the user set stays, and
// what cannot boot the image is one error naming the option.
func TestConfigQemuTarget(t *testing.T) {
	works := hostcap.Verdict{Usable: true, Reason: "a test guest ran"}
	defer hostcap.SetProber(func(time.Duration) hostcap.Verdict { return works })()
	if _, err := os.Stat(qemu.DefaultAAVMFCode); err != nil {
		t.Skip("qemu-efi-aarch64 is not installed")
	}
	for _, tc := range []struct {
		name  string
		set   map[string]interface{}
		image arch.Arch
		want  qemuTarget
		err   string
	}{
		{"amd64", nil, arch.AMD64, qemuTarget{Arch: "x86_64", Binary: "qemu-system-x86_64", Firmware: "bios", Accel: "kvm"}, ""},
		{"not known", nil, "", qemuTarget{Arch: "x86_64", Binary: "qemu-system-x86_64", Firmware: "bios", Accel: "kvm"}, ""},
		{"arm64", nil, arch.ARM64, qemuTarget{Arch: "aarch64", Binary: "qemu-system-aarch64", Firmware: "uefi",
			Code: qemu.DefaultAAVMFCode, Vars: qemu.DefaultAAVMFVars, Accel: "tcg"}, ""},
		{"arm64, binary given", map[string]interface{}{"qemu_binary": "/opt/qemu/bin/qemu-system-aarch64", "firmware": "uefi"}, arch.ARM64,
			qemuTarget{Arch: "aarch64", Binary: "/opt/qemu/bin/qemu-system-aarch64", Firmware: "uefi", Code: qemu.DefaultAAVMFCode, Vars: qemu.DefaultAAVMFVars, Accel: "tcg"}, ""},
		{"arm64 with bios", map[string]interface{}{"firmware": "bios"}, arch.ARM64, qemuTarget{}, `firmware "bios": an arm64 image boots through UEFI only`},
		{"arm64 with kvm", map[string]interface{}{"accelerator": "kvm"}, arch.ARM64, qemuTarget{}, `accelerator = "kvm": guest arch aarch64 is not the host's x86_64, KVM cannot run it`},
		{"amd64 uefi", map[string]interface{}{"firmware": "uefi"}, arch.AMD64, qemuTarget{Arch: "x86_64", Binary: "qemu-system-x86_64", Firmware: "uefi",
			Code: qemu.DefaultOVMFCode, Vars: qemu.DefaultOVMFVars, Accel: "kvm"}, ""},
		// firmware = "uefi" on an arm64 image needs AAVMF, not OVMF (Prepare
		// does not look for OVMF: the image's architecture is not known yet).
		{"arm64 uefi", map[string]interface{}{"firmware": "uefi"}, arch.ARM64, qemuTarget{Arch: "aarch64", Binary: "qemu-system-aarch64", Firmware: "uefi",
			Code: qemu.DefaultAAVMFCode, Vars: qemu.DefaultAAVMFVars, Accel: "tcg"}, ""},
		{"arm64 firmware missing", map[string]interface{}{"ovmf_code": "/nonexistent/AAVMF_CODE.fd"}, arch.ARM64, qemuTarget{}, "install qemu-efi-aarch64, or set ovmf_code and ovmf_vars"},
		{"armhf", nil, arch.ARMHF, qemuTarget{}, "the image's binaries are armhf: the qemu strategy boots amd64 and arm64 images; use the chroot strategy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raws := map[string]interface{}{"packer_build_name": "web", "base_image": "x.img", "strategy": "qemu"}
			for k, v := range tc.set {
				raws[k] = v
			}
			var c Config
			if _, err := c.Prepare(raws); err != nil {
				t.Fatal(err)
			}
			got, err := c.qemuTarget(tc.image)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("qemuTarget = %+v, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			got.AccelReason = ""
			if err != nil || got != tc.want {
				t.Errorf("qemuTarget = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// SOURCE_DATE_EPOCH from the environment Packer passes on, and the
// template's value before it.
func TestConfigSourceDateEpochEnv(t *testing.T) {
	defer hostcap.SetProber(kvmHangs)()
	raw := func(extra map[string]interface{}) map[string]interface{} {
		m := map[string]interface{}{"packer_build_name": "web", "base_image": "debian-12.qcow2"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	var c Config
	if _, err := c.Prepare(raw(nil)); err != nil || c.repro.Epoch() != 1700000000 {
		t.Fatalf("from the environment: %v, %+v", err, c.repro)
	}
	var d Config
	if _, err := d.Prepare(raw(map[string]interface{}{"source_date_epoch": "42"})); err != nil || d.repro.Epoch() != 42 {
		t.Fatalf("the template's value first: %v, %+v", err, d.repro)
	}
	var x Config
	if _, err := x.Prepare(map[string]interface{}{"packer_build_name": "web", "source_rootfs": "/t", "root_fs": "xfs"}); err == nil ||
		!strings.Contains(err.Error(), "SOURCE_DATE_EPOCH is set in the environment, but an xfs root") || !strings.Contains(err.Error(), "unset SOURCE_DATE_EPOCH") {
		t.Fatalf("an xfs root with the environment's epoch: %v", err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "soon")
	var e Config
	if _, err := e.Prepare(raw(nil)); err == nil || !strings.Contains(err.Error(), "environment SOURCE_DATE_EPOCH") {
		t.Fatalf("a bad environment value: %v", err)
	}
}
