# Chained factories from nothing: a Debian 12 base image made with
# debootstrap (bootable with BIOS and UEFI), then an application image on
# that artifact as a qcow2 overlay holding only its own changes.
#
#   packer build -only 'base.*' example/from-tree.pkr.hcl
#   packer build -only 'app.*'  example/from-tree.pkr.hcl
#
# Boot either under QEMU: the login prompt comes on the serial console.
packer {
  required_plugins {
    imagefactory = {
      source  = "github.com/imagefactory/imagefactory"
      version = ">= 0.1.0"
    }
  }
}

source "imagefactory" "base" {
  bootstrap {
    tool    = "debootstrap"
    suite   = "bookworm"
    variant = "minbase"
    include = ["systemd-sysv", "udev", "openssh-server", "linux-image-amd64"]
  }
  partition_table  = "gpt"
  free_space       = "512M"
  format           = "qcow2"
  output_directory = "output-base"
  image_name       = "debian-12-base"
}

source "imagefactory" "app" {
  base_image       = "output-base/debian-12-base.qcow2"
  use_backing_file = true
  output_directory = "output-app"
  image_name       = "debian-12-app"
}

build {
  name    = "base"
  sources = ["source.imagefactory.base"]
  provisioner "shell" {
    inline = ["echo 'debian' > /etc/hostname"]
  }
}

build {
  name    = "app"
  sources = ["source.imagefactory.app"]
  provisioner "shell" {
    inline = ["apt-get update", "apt-get install -y --no-install-recommends nginx-light", "systemctl enable nginx"]
  }
}
