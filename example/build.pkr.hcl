# The example factory: a Debian 12 web server image made from nothing.
#
#   make example       # from the repository root, as root
#
# debootstrap makes the root tree (cached in /var/cache/imagefactory) -> the
# builder lays it on a bootable GPT disk (BIOS boot + EFI system + root
# partition, GRUB for BIOS and UEFI) -> every provisioner below runs in a
# chroot on it -> imagefactory-scrub removes what ties the image to the
# factory -> imagefactory-sparsify shrinks it and writes a zstd qcow2 ->
# imagefactory-boottest boots it under QEMU on a throwaway overlay and
# checks from outside that nginx serves the page, that the SSH host keys are
# new (none of the factory's), that /etc/machine-id was made at first boot
# and that systemd says the boot went well. example/run.sh then checks the
# image offline.
#
# By hand, from the repository root, with the plugin installed:
#
#   packer build -force example/build.pkr.hcl

packer {
  required_plugins {
    imagefactory = {
      source  = "github.com/imagefactory/imagefactory"
      version = ">= 0.1.0"
    }
  }
}

variable "factory_record" {
  type        = string
  default     = ""
  description = "Where the build copies the factory's SSH host public keys, for imagefactory-boottest to refuse; empty means example/cache/factory."
}

locals {
  factory_record = var.factory_record != "" ? var.factory_record : "${path.root}/cache/factory"
}

source "imagefactory" "debian-web" {
  # No base image: debootstrap makes the tree, the builder makes the disk.
  # The tree is cached by its inputs, so a second build skips debootstrap.
  # The mirror is debootstrap's default (deb.debian.org).
  bootstrap {
    tool    = "debootstrap"
    suite   = "bookworm"
    variant = "minbase"
    include = ["systemd-sysv", "udev", "linux-image-amd64", "openssh-server"]
  }
  partition_table = "gpt" # BIOS boot + EFI system partition + root
  root_fs         = "ext4"
  # Room for apt in the chroot; imagefactory-sparsify takes what is left
  # unused back out (shrink).
  free_space = "768M"
  # kernel_cmdline = "console=tty0 console=ttyS0,115200" (the default)

  # The working disk stays raw: the post-processors convert it once.
  format           = "raw"
  output_directory = "${path.root}/output-debian-web"
  image_name       = "debian-12-web" # -> output-debian-web/debian-12-web.raw

  # Host commands after provisioning, before the unmount: hand the blocks
  # apt freed back to the working disk. sync first: ext4 frees deleted
  # files' blocks only when the journal commits.
  pre_unmount_commands = ["sync -f {{.MountPath}}", "fstrim {{.MountPath}}"]

  # Everything else as for a base image (example/base-image.pkr.hcl lists
  # the options): chroot_mounts, resolv_conf = "copy", a policy-rc.d that
  # refuses service starts during the build, copy_files, environment...
}

build {
  sources = ["source.imagefactory.debian-web"]

  # The factory's identity, as the tree made it: debootstrap's openssh-server
  # made host keys, and every image from the cached tree would share them.
  # Recorded on the host so the boot test can show that the image's are new.
  provisioner "shell-local" {
    inline = [
      "rm -rf '${local.factory_record}' && mkdir -p '${local.factory_record}'",
      "cp ${build.MountPath}/etc/ssh/ssh_host_*_key.pub '${local.factory_record}/'",
      "ls '${local.factory_record}'",
    ]
  }

  # diskimage-builder elements, unmodified: example/elements/web-info and
  # DIB's own runtime-ssh-host-keys (Debian's python3-diskimage-builder),
  # which it depends on: it removes the host keys and enables a unit that
  # makes new ones at boot. Inside phases run in the chroot, outside phases
  # on the host with TARGET_ROOT = the mounted root.
  provisioner "imagefactory-elements" {
    elements      = ["web-info"]
    elements_path = ["${path.root}/elements", "/usr/lib/python3/dist-packages/diskimage_builder/elements"]
  }

  # Runs in the chroot. Package scripts cannot start services here (the
  # builder's policy-rc.d refuses), so nginx is installed and enabled, not
  # started. systemd-networkd (part of systemd) brings up the NIC with DHCP.
  provisioner "shell" {
    inline = [
      "apt-get update",
      "apt-get -y upgrade", # the tree's security updates
      "apt-get install -y --no-install-recommends nginx-light",
      "systemctl enable nginx.service",
      "printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=yes\\n' > /etc/systemd/network/80-dhcp.network",
      "systemctl enable systemd-networkd.service",
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

  post-processors {
    # What ties the image to the factory or to one server: host keys (and a
    # first-boot unit to make new ones if nothing else would), machine-id
    # (set to "uninitialized": systemd makes one at first boot), logs, apt
    # and shell histories, leases... The report is debian-12-web.scrub.json.
    post-processor "imagefactory-scrub" {}

    # The root filesystem just large enough plus 256 MiB, every free block
    # returned, converted to a zstd-compressed qcow2 (debian-12-web.qcow2,
    # with a .sha256 beside it); the raw disk is removed.
    post-processor "imagefactory-sparsify" {
      format      = "qcow2"
      compression = "zstd"
      shrink      = true
      free_space  = "256M"
    }

    # The gate: the image boots as a cloud would boot it (SeaBIOS, its own
    # GRUB and kernel, its own network configuration) on a throwaway qcow2
    # overlay, so debian-12-web.qcow2 is never written, and is checked from
    # outside; the build fails, with the serial console's last lines, if it
    # does not pass. The built-in checks run too: no SSH host key the image
    # held or the factory had (recorded above), a new /etc/machine-id, a
    # hostname not this host's, systemd's boot "running". The image has no
    # cloud-init: the test's SSH key goes into the overlay only. The serial
    # console is kept in debian-12-web.console.log.
    post-processor "imagefactory-boottest" {
      http {
        url           = "http://localhost/"
        body_contains = "<title>Built by packer-plugin-imagefactory</title>"
      }
      http {
        url           = "http://localhost/build-info.txt"
        body_contains = "nginx"
      }
      factory_host_keys = ["${local.factory_record}/*.pub"]
      inline = [
        "systemctl is-active nginx.service",
        "cat /var/www/html/build-info.txt",
      ]
    }
  }
}
