# The qemu strategy, chained on the example factory's image: the image is
# booted under QEMU and provisioned over SSH instead of in a chroot, for
# installs that need a running system (services started, their own kernel
# and /proc). Under TCG (where KVM cannot run a guest: the build says which
# accelerator it chose) expect minutes, not seconds: `make bench` prints the
# ratio to the chroot strategy.
#
#   make example                                  # makes the base image
#   packer build -force example/qemu/build.pkr.hcl
#
# The artifact is a qcow2 overlay on the base image holding only this
# build's changes (use_backing_file). Any image with sshd and a network
# configuration boots here; by its own boot loader (GRUB) unless
# boot_kernel = "image" boots its /vmlinuz directly.

packer {
  required_plugins {
    imagefactory = {
      source  = "github.com/imagefactory/imagefactory"
      version = ">= 0.1.0"
    }
  }
}

variable "base" {
  type        = string
  default     = ""
  description = "The base image; empty means the example factory's, example/output-debian-web/debian-12-web.qcow2."
}

locals {
  base = var.base != "" ? var.base : "${path.root}/../output-debian-web/debian-12-web.qcow2"
}

source "imagefactory" "web-qemu" {
  base_image       = local.base
  use_backing_file = true # the working disk and the artifact: a qcow2 overlay on base
  output_directory = "${path.root}/../output-web-qemu"
  image_name       = "debian-12-web-app"

  strategy = "qemu"
  cpus     = 2
  memory   = 1024
  # accelerator = "auto"   # kvm only where a test guest runs under it, else tcg
  # cpu_model   = "max"    # default: host under kvm; under tcg the least the image needs (qemu64 for Debian)
  # firmware    = "uefi"
  # The factory's image has no cloud-init: the build's SSH key is put in
  # offline before the boot and taken out afterwards.
  inject_ssh_key   = true
  shutdown_command = "systemctl poweroff"
}

build {
  sources = ["source.imagefactory.web-qemu"]

  provisioner "shell" {
    inline = [
      # A running system: the services the base image enabled are up.
      "test \"$(systemctl is-active nginx)\" = active",
      "echo \"application layer, built on $(cat /var/www/html/build-info.txt)\" > /var/www/html/app.txt",
    ]
  }

  # Host keys, machine-id and the build's key are already gone; the scrub
  # post-processor takes out the rest (logs, caches...) in the overlay.
  post-processor "imagefactory-scrub" {}
}
