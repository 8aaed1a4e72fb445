# The qemu strategy: the same kind of build as example/build.pkr.hcl, but the
# image is booted under QEMU and provisioned over SSH instead of in a chroot.
# For installs that need a running system (services started, their own
# kernel and /proc). Under TCG (no /dev/kvm) expect minutes, not seconds:
# `make bench` prints the ratio to the chroot strategy.
#
#   packer build -var base=debian-12-with-kernel.raw example/qemu/build.pkr.hcl
#
# The base image needs a kernel, sshd and (for the seed) cloud-init, e.g.
# DEBIAN_INCLUDE_EXTRA=linux-image-amd64,cloud-init scripts/debian-rootfs.sh
# laid on a disk as example/make-base-image.sh does. Without a boot loader on
# the disk, boot_kernel = "image" boots the image's own /vmlinuz directly.

packer {
  required_plugins {
    imagefactory = {
      source  = "github.com/imagefactory/imagefactory"
      version = ">= 0.1.0"
    }
  }
}

variable "base" { type = string }

source "imagefactory" "web-qemu" {
  base_image       = var.base
  output_directory = "output-web-qemu"
  format           = "qcow2"

  strategy = "qemu"
  boot_kernel = "image" # omit for a disk that boots by itself (GRUB)
  cpus     = 2
  memory   = 1024
  # firmware = "uefi"
  # For an image without cloud-init:
  # inject_ssh_key = true
}

build {
  sources = ["source.imagefactory.web-qemu"]

  provisioner "shell" {
    inline = [
      "apt-get update",
      "apt-get install -y --no-install-recommends nginx-light",
      "systemctl enable nginx",
      # A running system: the service really starts and answers.
      "systemctl start nginx && sleep 1 && test \"$(systemctl is-active nginx)\" = active",
    ]
  }

  # Host keys, machine-id, cloud-init state and the build's key are already
  # gone; the scrub post-processor takes out the rest (logs, caches...).
  post-processor "imagefactory-scrub" {}
}
