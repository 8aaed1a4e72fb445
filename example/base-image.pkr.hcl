# A Debian 12 web server image made from a base image (the factory from
# nothing is example/build.pkr.hcl, which `make example` runs). From the
# repository root, as root:
#
#   example/make-base-image.sh        # debootstrap, an MBR disk with one ext4
#                                     # partition labelled cloudimg-rootfs, as qcow2
#   packer build -force example/base-image.pkr.hcl
#
# The builder copies the base image to a raw working disk, grows it to
# disk_size, attaches the partitions as loop devices, mounts the root
# filesystem and runs every provisioner below in a chroot on it. Nothing of
# that is left on the host afterwards.

packer {
  required_plugins {
    imagefactory = {
      source  = "github.com/imagefactory/imagefactory"
      version = ">= 0.1.0"
    }
  }
}

variable "base_image" {
  type        = string
  default     = ""
  description = "The base disk image; empty means example/cache/debian-12-base.qcow2."
}

variable "base_image_checksum" {
  type        = string
  default     = ""
  description = "Its checksum (sha256:..., file:..., none); empty means the .sha256 file beside the default image."
}

locals {
  base_image          = var.base_image != "" ? var.base_image : "${path.root}/cache/debian-12-base.qcow2"
  base_image_checksum = var.base_image_checksum != "" ? var.base_image_checksum : "file:${path.root}/cache/debian-12-base.qcow2.sha256"
}

source "imagefactory" "debian-web" {
  # A local path or a URL (http, https, file). The format (raw, qcow2,
  # vmdk, vhdx, vpc) is detected from the content; gzip, xz and zstd are
  # decompressed on the way in. The base image is never modified.
  base_image = local.base_image
  # sha256:<hex> (md5, sha1, sha512 too), file:<path or URL of a checksum
  # file> or none. Required when base_image is a URL.
  base_image_checksum = local.base_image_checksum

  # The base disk is 2 GiB; grow it to 3 GiB. The last partition and its
  # ext4 filesystem grow with it, before anything is mounted.
  disk_size = "3G"

  # The working disk is raw; the artifact is converted at the end.
  format           = "qcow2"
  output_directory = "${path.root}/output-debian-web-from-base"
  image_name       = "debian-12-web" # -> output-debian-web-from-base/debian-12-web.qcow2

  # Host commands after provisioning, before the unmount: hand the blocks
  # freed by apt back to the working disk (the loop device punches holes in
  # it), so the qcow2 carries only live data: about 250 MiB instead of 350
  # to 480. The sync first: ext4 frees deleted files' blocks only when the
  # journal commits, and fstrim skips blocks not yet freed.
  pre_unmount_commands = ["sync -f {{.MountPath}}", "fstrim -v {{.MountPath}}"]

  # The other options, with their defaults or an example:
  #
  # strategy        = "chroot"
  # root_partition  = 1                    # default: the filesystem labelled cloudimg-rootfs
  #                                        # or img-rootfs, else the one holding /etc/fstab
  # required_mounts = ["/boot"]            # fstab mounts that must mount (others may be skipped)
  # mount_options   = ["noatime"]          # for the root filesystem
  # mount_path      = "/mnt/{{.BuildName}}" # default /run/imagefactory/mnt/<build name>-<random>
  # chroot_mounts = [                      # merged by target into proc, sysfs, /dev, /dev/pts, tmpfs /run
  #   ["tmpfs", "tmpfs", "/tmp"],
  #   ["none", "", "/run"],                # fstype none removes a default
  # ]
  # resolv_conf          = "copy"          # copy (the image's own file is restored), bind or keep
  # allow_service_starts = false           # a policy-rc.d refuses service starts during the build
  # copy_files           = ["/etc/apt/apt.conf.d/01proxy"]   # host files copied in at the same path
  # pre_mount_commands   = ["echo disk {{.DiskPath}} root {{.Device}}"]
  # post_mount_commands  = ["ls {{.MountPath}}"]
  # command_wrapper      = "sudo {{.Command}}" # when Packer itself is not run as root
  # environment = {                        # the chroot does not inherit the host's environment
  #   http_proxy = "http://proxy.example:3128"
  # }
}

build {
  sources = ["source.imagefactory.debian-web"]

  # diskimage-builder elements, unmodified: example/elements/web-info and
  # DIB's own runtime-ssh-host-keys (Debian's python3-diskimage-builder),
  # which it depends on. Inside phases run in the chroot, outside phases
  # on the host with TARGET_ROOT = the mounted root. Before the shell
  # provisioner, whose apt cleanup then also removes the package lists
  # install-packages fetched.
  provisioner "imagefactory-elements" {
    elements      = ["web-info"]
    elements_path = ["${path.root}/elements", "/usr/lib/python3/dist-packages/diskimage_builder/elements"]
  }

  # Runs in the chroot. Package scripts cannot start services here (the
  # builder's policy-rc.d refuses), so nginx is installed and enabled, not
  # started.
  provisioner "shell" {
    inline = [
      "apt-get update",
      "apt-get -y upgrade", # the base image's security updates
      "apt-get install -y --no-install-recommends nginx-light",
      "systemctl enable nginx.service",
      "rm -f /var/www/html/index.nginx-debian.html",
      "printf 'built %s from %s, nginx %s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"Debian $(cat /etc/debian_version)\" \"$(dpkg-query -W -f='$${Version}' nginx-light)\" > /var/www/html/build-info.txt",
      "apt-get clean",
      "rm -rf /var/lib/apt/lists/*",
    ]
  }

  # Uploads into the mounted image (the chroot communicator copies the file).
  provisioner "file" {
    source      = "${path.root}/files/index.html"
    destination = "/var/www/html/index.html"
  }

  # Runs on the host while the image is still mounted: the builder's
  # generated data says where.
  provisioner "shell-local" {
    inline = [
      "echo 'root filesystem mounted at ${build.MountPath} from ${build.Device} (partition ${build.RootPartition} of ${build.DiskPath})'",
      "ls -l ${build.MountPath}/var/www/html",
    ]
  }
}
