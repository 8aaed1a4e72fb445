// Package vfatguest holds one test: the tests whose outcome depends on
// whether the kernel mounts vfat, run inside a QEMU guest booted from
// Debian 12's stock kernel (linux-image-amd64, vfat a module loaded on
// demand), so that both kinds of kernel are checked on a host whose own
// kernel has no vfat (fixture.VFATGuest, fixture.RunInGuest). It has no
// code of its own.
package vfatguest
