# For full specification on the configuration of this file visit:
# https://github.com/hashicorp/integration-template#metadata-configuration
integration {
  name        = "Image Factory"
  description = "Turns base disk images into cloud-ready images: loop devices, mounts and a chroot, nothing left on the host."
  identifier  = "packer/imagefactory/imagefactory"
  component {
    type = "builder"
    name = "imagefactory"
    slug = "imagefactory"
  }
  component {
    type = "post-processor"
    name = "imagefactory-scrub"
    slug = "scrub"
  }
  component {
    type = "post-processor"
    name = "imagefactory-sparsify"
    slug = "sparsify"
  }
  component {
    type = "post-processor"
    name = "imagefactory-fetchdisk"
    slug = "fetchdisk"
  }
  component {
    type = "post-processor"
    name = "imagefactory-boottest"
    slug = "boottest"
  }
  component {
    type = "provisioner"
    name = "imagefactory-elements"
    slug = "elements"
  }
}
