#!/usr/bin/env bash
# Installs what the builds and the tests need from Debian's archive. Safe to
# run again; used by .ci/run and by the README's commands on a fresh machine.
set -euo pipefail

packages=(
	qemu-utils        # qemu-img: format detection, conversions
	qemu-system-common # qemu-storage-daemon: scrub edits qcow2/vmdk/vhdx in place through a FUSE export
	e2fsprogs         # mkfs.ext4, e2fsck, resize2fs, debugfs
	xfsprogs          # mkfs.xfs, xfs_growfs
	btrfs-progs       # mkfs.btrfs, btrfs filesystem resize
	dosfstools        # mkfs.vfat for fixtures with an EFI system partition
	mtools            # fat_mounts = "staged": FAT partitions (ESP, Raspberry Pi firmware) copied out and written back; the fixtures' FAT files
	util-linux        # blkid, losetup, sfdisk (fixtures and leak checks)
	fdisk gdisk       # sfdisk, sgdisk: fixture tables and their verification
	busybox-static    # the tests' tiny root trees
	debootstrap       # the example's Debian base image
	zstd xz-utils gzip
	curl ca-certificates
	openssh-client     # ssh-keyscan, ssh-keygen: the example's boot test compares host keys
	qemu-system-x86   # strategy = "qemu": the builder boots images (TCG without KVM)
	ovmf              # firmware = "uefi" for the qemu strategy
	qemu-system-arm   # qemu-system-aarch64: the qemu strategy boots arm64 images (-M virt, TCG)
	qemu-efi-aarch64  # AAVMF: the UEFI firmware of arm64 images
	mtools            # mcopy: the tests read the EFI system partition without kernel vfat
	glance-api        # OpenStack Glance: fetchdisk's acceptance tests and bench import into it
	python3-diskimage-builder # DIB's own elements, run unmodified by the elements provisioner's tests and bench
	git               # source-repository-* of type git (elements provisioner)
	grub-pc-bin        # GRUB's BIOS images for disks made from a root tree
	grub-efi-amd64-bin # GRUB's UEFI images for them
	acl                # setfacl/getfacl: ACLs kept when a tree becomes a filesystem
	xorriso            # packer-plugin-qemu's cd_content ISO (the cidata seed in bench/qemu-vs-chroot.sh)
	rpm                # rpm, rpmbuild: the rpm-family test tree's package database (rpm --root --initdb, -i)
	policycoreutils    # setfiles -r: SELinux relabel of images without their own setfiles (selinux_relabel), and the tests' label checks
	attr               # setfattr: the SELinux fixture's hand-set label
	qemu-user-static   # qemu-ARCH-static: the chroot of an image of another architecture (binfmt_misc, F flag)
	shellcheck         # actionlint checks the workflows' run: scripts with it (make lint-workflows)
)

# The foreign-architecture tests' trees are Debian's busybox-static of
# armhf and arm64 (apt-get download busybox-static:armhf): apt lists a
# foreign architecture's packages only once dpkg knows it.
for arch in armhf arm64; do
	if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
		dpkg --add-architecture "$arch"
		foreign_added=1
	fi
done

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})) || [[ -n ${foreign_added:-} ]]; then
	export DEBIAN_FRONTEND=noninteractive
	# One stale list (a mirror mid-sync: "Hash Sum mismatch") must not
	# stop the install; a package still missing fails below, by name.
	apt-get update -q || echo "install-deps: apt-get update reported errors; going on with the lists it has" >&2
	if ((${#missing[@]})); then
		apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi
fi
