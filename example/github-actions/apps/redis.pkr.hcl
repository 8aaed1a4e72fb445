# Application `redis`: Redis on the night's base image; the boot test waits
# for SSH and asks Redis for a PONG before the import.
source "imagefactory" "redis" {
  base_image       = var.base_image
  output_directory = "output-redis"
  image_name       = "debian-12-redis"
}

build {
  name    = "redis"
  sources = ["source.imagefactory.redis"]

  provisioner "shell" {
    inline = [
      "apt-get update",
      "apt-get install -y --no-install-recommends redis-server",
      "systemctl enable redis-server.service",
      "apt-get clean",
      "rm -rf /var/lib/apt/lists/*",
    ]
  }

  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {
      format = "qcow2"
      shrink = true
    }
    post-processor "imagefactory-boottest" {
      inline       = ["redis-cli ping | grep -qx PONG"]
      boot_timeout = "10m"
    }
    post-processor "imagefactory-fetchdisk" {
      name                          = "glance"
      api                           = "glance"
      auth_url                      = var.os_auth_url
      application_credential_id     = var.os_application_credential_id
      application_credential_secret = var.os_application_credential_secret
      image_name                    = "debian-12-redis-${local.night}"
      serve_address                 = "0.0.0.0:8080"
      serve_host                    = var.serve_host
    }
  }
}
