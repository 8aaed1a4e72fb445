#!/usr/bin/env bash
# Installs from Debian's archive what the plugin, the example or the tests
# need. Safe to run again (apt only when a package is missing).
#
#   scripts/install-deps.sh [runtime|example|test]   (default: test)
#   scripts/install-deps.sh --list GROUP             (the packages, one a line)
#
# runtime: what the plugin runs (README.md, "Prerequisites"); example:
# runtime plus what `make example` adds; test: all of it plus what only the
# tests and benches need (.ci/run, make test). Whatever it installs, no
# service is started and none stays enabled (scripts/apt-install-quiet.sh).
set -euo pipefail

runtime=(
	qemu-utils        # qemu-img: format detection, conversions
	qemu-system-common # qemu-storage-daemon: scrub edits qcow2/vmdk/vhdx in place through a FUSE export
	e2fsprogs         # mkfs.ext4, e2fsck, resize2fs, debugfs
	xfsprogs          # mkfs.xfs, xfs_growfs
	btrfs-progs       # mkfs.btrfs, btrfs filesystem resize
	dosfstools        # fsck.fat: FAT partitions written back (fat_mounts = "staged")
	mtools            # fat_mounts = "staged": FAT partitions (ESP, Raspberry Pi firmware) copied out and written back
	util-linux        # blkid, losetup
	fdisk             # sfdisk
	zstd xz-utils gzip # compressed base images
	debootstrap       # the builder's bootstrap block (the example's Debian base)
	qemu-system-x86   # strategy = "qemu" and imagefactory-boottest (TCG without KVM)
	ovmf              # firmware = "uefi" for the qemu strategy
	grub-pc-bin        # GRUB's BIOS images for disks made from a root tree
	grub-efi-amd64-bin # GRUB's UEFI images for them
	acl                # ACLs kept when a tree becomes a filesystem
	git               # source-repository-* of type git (elements provisioner)
	policycoreutils    # setfiles -r: SELinux relabel of images without their own setfiles (selinux_relabel)
	qemu-user-static   # qemu-ARCH-static: the chroot of an image of another architecture (binfmt_misc, F flag)
	qemu-system-arm   # qemu-system-aarch64: the qemu strategy boots arm64 images (-M virt, TCG)
	qemu-efi-aarch64  # AAVMF: the UEFI firmware of arm64 images
)
example=(
	openssh-client     # ssh-keyscan, ssh-keygen: the example's boot test compares host keys
	gdisk              # sgdisk -v: the example's offline check of its GPT
)
tests=(
	busybox-static    # the tests' tiny root trees
	curl ca-certificates
	glance-api        # OpenStack Glance: fetchdisk's acceptance tests and bench import into it
	python3-diskimage-builder # DIB's own elements, run unmodified by the elements provisioner's tests and bench
	xorriso            # packer-plugin-qemu's cd_content ISO (the cidata seed in bench/qemu-vs-chroot.sh)
	rpm                # rpm, rpmbuild: the rpm-family test tree's package database (rpm --root --initdb, -i)
	attr               # setfattr: the SELinux fixture's hand-set label
	shellcheck         # actionlint checks the workflows' run: scripts with it (make lint-workflows)
)

list=
if [[ ${1:-} == --list ]]; then
	list=1
	shift
fi
group=${1:-test}
case $group in
runtime) packages=("${runtime[@]}") ;;
example) packages=("${runtime[@]}" "${example[@]}") ;;
test) packages=("${runtime[@]}" "${example[@]}" "${tests[@]}") ;;
*)
	echo "install-deps: unknown group '$group' (runtime, example or test)" >&2
	exit 2
	;;
esac
if [[ -n $list ]]; then
	printf '%s\n' "${packages[@]}"
	exit 0
fi

# The foreign-architecture tests' trees are Debian's busybox-static of
# armhf and arm64 (apt-get download busybox-static:armhf): apt lists a
# foreign architecture's packages only once dpkg knows it. Tests only.
if [[ $group == test ]]; then
	for arch in armhf arm64; do
		if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
			dpkg --add-architecture "$arch"
			foreign_added=1
		fi
	done
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})) || [[ -n ${foreign_added:-} ]]; then
	# One stale list (a mirror mid-sync: "Hash Sum mismatch") must not
	# stop the install; a package still missing fails below, by name.
	apt-get update -q || echo "install-deps: apt-get update reported errors; going on with the lists it has" >&2
	if ((${#missing[@]})); then
		"$(dirname "$0")/apt-install-quiet.sh" "${missing[@]}"
	fi
fi
