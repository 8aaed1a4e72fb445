# What every application image of the factory shares (factory.yml, job
# `apps`): this directory is one Packer configuration, each other file one
# application's build, chosen with -only:
#
#   sudo packer build -only 'web.*' -except glance \
#     -var base_image=output-base/debian-12-base.qcow2 example/github-actions/apps
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
  description = "The base artifact (base.pkr.hcl's qcow2)."
}

# Glance: an application credential from the repository's secrets, through
# the job's environment (factory.yml).
variable "os_auth_url" {
  type    = string
  default = env("OS_AUTH_URL")
}
variable "os_application_credential_id" {
  type      = string
  default   = env("OS_APPLICATION_CREDENTIAL_ID")
  sensitive = true
}
variable "os_application_credential_secret" {
  type      = string
  default   = env("OS_APPLICATION_CREDENTIAL_SECRET")
  sensitive = true
}
# Where Glance fetches the disk from: the runner's address as the cloud sees
# it (docs/github-actions.md: a runner Glance can reach).
variable "serve_host" {
  type    = string
  default = env("FACTORY_SERVE_HOST")
}

locals {
  # The night's images are named by date: debian-12-web-20261201.
  night = formatdate("YYYYMMDD", timestamp())
}
