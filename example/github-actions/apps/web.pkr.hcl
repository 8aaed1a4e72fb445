# Application `web`: nginx on the night's base image; the boot test asks it
# for a page over HTTP and checks the service over SSH before the import.
source "imagefactory" "web" {
  base_image       = var.base_image
  output_directory = "output-web"
  image_name       = "debian-12-web"
}

build {
  name    = "web"
  sources = ["source.imagefactory.web"]

  provisioner "shell" {
    inline = [
      "apt-get update",
      "apt-get install -y --no-install-recommends nginx-light",
      "systemctl enable nginx.service",
      "echo ok > /var/www/html/health",
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
    # The gate: a failed check stops the chain, so nothing is imported.
    post-processor "imagefactory-boottest" {
      http {
        url           = "http://localhost/health" # nginx in the guest, port 80
        body_contains = "ok"
      }
      inline       = ["systemctl is-active nginx.service"]
      boot_timeout = "10m"
    }
    post-processor "imagefactory-fetchdisk" {
      name                          = "glance" # -except glance: no import
      api                           = "glance"
      auth_url                      = var.os_auth_url
      application_credential_id     = var.os_application_credential_id
      application_credential_secret = var.os_application_credential_secret
      image_name                    = "debian-12-web-${local.night}"
      serve_address                 = "0.0.0.0:8080"
      serve_host                    = var.serve_host
    }
  }
}
