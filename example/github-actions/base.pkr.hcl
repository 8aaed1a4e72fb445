# The factory's base image (example/github-actions/factory.yml, job `base`):
# Debian 12 from debootstrap on a GPT disk that boots with BIOS and UEFI,
# scrubbed, as one qcow2 file the application images start from. It is
# booted before any application build takes it.
#
#   sudo packer build example/github-actions/base.pkr.hcl
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
    include = ["systemd-sysv", "udev", "linux-image-amd64", "openssh-server", "ca-certificates"]
  }
  partition_table  = "gpt"
  free_space       = "1G" # room for the application layers
  format           = "qcow2"
  output_directory = "output-base"
  image_name       = "debian-12-base" # -> output-base/debian-12-base.qcow2
}

build {
  sources = ["source.imagefactory.base"]

  provisioner "shell" {
    inline = [
      "printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=yes\\n' > /etc/systemd/network/80-dhcp.network",
      "systemctl enable systemd-networkd.service",
      "apt-get clean",
    ]
  }

  post-processors {
    post-processor "imagefactory-scrub" {}
    # The gate: an image that does not boot to SSH, or fails a first-boot
    # check (new host keys and machine-id, systemd running), is not handed on.
    post-processor "imagefactory-boottest" {
      boot_timeout = "10m"
    }
  }
}
