#!/usr/bin/env bash
# Makes the example's base image: a small Debian 12 (bookworm) system from
# debootstrap, on an MBR-partitioned disk, converted to qcow2 so the build
# exercises format detection.
#
#   example/cache/debian-12-rootfs.tar.zst   the debootstrap tree (reused)
#   example/cache/debian-12-base.qcow2       the base image
#   example/cache/debian-12-base.qcow2.sha256
#
# A second run skips debootstrap (the tree is cached as a tarball) and, if
# the image is newer than the tarball and matches its checksum, everything.
# REBUILD=1 starts from scratch. Needs root: debootstrap, and mkfs -d must
# keep the tree's owners and device nodes.
#
# No loop device and no mount: the filesystem is written straight into the
# partition's byte range of the disk file (mkfs.ext4 -E offset=).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=$here/cache
suite=bookworm
# A small but real system: systemd as init, udev, sshd, apt (in minbase).
include=systemd-sysv,udev,openssh-server,netbase,iproute2,ca-certificates
disk_size=2G
part_start=2048 # sectors: the partition starts at 1 MiB
label=cloudimg-rootfs

tarball=$cache/debian-12-rootfs.tar.zst
params=$cache/debian-12-rootfs.params # what made the tarball: a new include list makes a new tarball
image=$cache/debian-12-base.qcow2
timings=$cache/base-image.timings # read by run.sh for its summary

log() { printf '==> make-base-image: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

((EUID == 0)) || die "run as root (debootstrap, and mkfs.ext4 -d must keep owners and device nodes)"
for tool in debootstrap sfdisk mkfs.ext4 qemu-img zstd tar sha256sum; do
	command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done
mkdir -p "$cache"

work=$(mktemp -d "$cache/.work.XXXXXX")
cleanup() {
	# debootstrap mounts /proc and /sys in the tree; make sure a failed run
	# leaves none of them behind before removing the tree.
	if [[ -d $work ]]; then
		{ findmnt -rn -o TARGET | grep -F "$work/" | sort -r || true; } | while read -r m; do umount -l "$m" || true; done
		rm -rf "$work"
	fi
	return 0
}
trap cleanup EXIT

# Bump tree when the configuration below changes: the cached tarball is redone.
tree_version=2
want_params="suite=$suite variant=minbase include=$include tree=$tree_version"
[[ ${REBUILD:-} == 1 ]] && rm -f "$tarball" "$params" "$image" "$image.sha256"
if [[ -f $tarball && -f $params && "$(cat "$params")" == "$want_params" ]]; then
	log "reusing the debootstrap tree $tarball (REBUILD=1 makes a new one)"
	echo "debootstrap cached" >"$timings"
else
	rm -f "$tarball" "$params" "$image" "$image.sha256"
	tree=$work/tree
	log "debootstrap $suite ($include), from debootstrap's default mirror"
	t0=$(now)
	# No mirror argument: debootstrap's built-in default.
	debootstrap --variant=minbase --include="$include" "$suite" "$tree"
	echo "debootstrap $(since "$t0")" >"$timings"

	log "configuring the tree"
	# apt sources as Debian's cloud images have them: the release, its
	# updates and the security archive, on the mirror debootstrap used.
	mirror=$(awk '$1 == "deb" { print $2; exit }' "$tree/etc/apt/sources.list")
	[[ -n $mirror ]] || die "no mirror in $tree/etc/apt/sources.list"
	cat >"$tree/etc/apt/sources.list.d/debian.sources" <<-EOF
		Types: deb
		URIs: $mirror
		Suites: $suite $suite-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

		Types: deb
		URIs: ${mirror%/}-security
		Suites: $suite-security
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	rm "$tree/etc/apt/sources.list"
	# Root filesystem by label, as cloud images do; the builder finds it by
	# this label too.
	printf 'LABEL=%s\t/\text4\tdefaults,discard,errors=remount-ro\t0\t1\n' "$label" >"$tree/etc/fstab"
	echo debian >"$tree/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$tree/etc/hosts"
	# debootstrap copied the host's resolv.conf in; an image carries none of the host.
	: >"$tree/etc/resolv.conf"
	# Each instance makes its own machine id on first boot.
	: >"$tree/etc/machine-id"
	rm -f "$tree/var/lib/dbus/machine-id"
	# DHCP on any wired interface through systemd-networkd (part of systemd).
	cat >"$tree/etc/systemd/network/50-dhcp.network" <<-'EOF'
		[Match]
		Name=en* eth*

		[Network]
		DHCP=yes
	EOF
	chroot "$tree" systemctl enable systemd-networkd.service
	# No host keys in an image: every instance makes its own before sshd starts.
	rm -f "$tree"/etc/ssh/ssh_host_*
	cat >"$tree/etc/systemd/system/ssh-host-keys.service" <<-'EOF'
		[Unit]
		Description=Generate missing SSH host keys
		Before=ssh.service
		ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

		[Service]
		Type=oneshot
		ExecStart=/usr/bin/ssh-keygen -A

		[Install]
		WantedBy=multi-user.target
	EOF
	chroot "$tree" systemctl enable ssh-host-keys.service
	# Small: no package caches or indexes (apt-get update brings them back).
	chroot "$tree" apt-get clean
	rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/log/*.log "$tree"/var/cache/debconf/*-old

	log "caching the tree as $tarball"
	tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' --acls --zstd -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	echo "$want_params" >"$params"
	rm -rf "$tree"
fi

if [[ -f $image && -f $image.sha256 && $image -nt $tarball ]] &&
	(cd "$cache" && sha256sum --quiet -c "$(basename "$image").sha256" 2>/dev/null); then
	log "base image $image is up to date"
	echo "disk cached" >>"$timings"
	exit 0
fi

t0=$(now)
tree=$work/tree
mkdir "$tree"
log "unpacking the tree"
tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' --acls --zstd -xpf "$tarball"

raw=$work/disk.raw
log "laying it onto a $disk_size disk: MBR, one ext4 partition labelled $label"
truncate -s "$disk_size" "$raw" # sparse
echo "start=$part_start, type=83, bootable" | sfdisk -q --label dos "$raw"
bytes=$(stat -c %s "$raw")
offset=$((part_start * 512))
fs_kib=$(((bytes - offset) / 1024))
# The filesystem goes straight into the partition's byte range: no loop
# device. -d copies the tree with its owners, modes, device nodes, hard
# links and xattrs (mke2fs >= 1.43). -F: the file holds a partition table,
# which mke2fs would otherwise ask about; nodiscard keeps it from punching
# the file.
mkfs.ext4 -q -F -L "$label" -E "offset=$offset,nodiscard" -d "$tree" "$raw" "${fs_kib}k"
rm -rf "$tree"

log "converting to qcow2"
qemu-img convert -f raw -O qcow2 "$raw" "$image.tmp"
rm -f "$raw"
mv "$image.tmp" "$image"
(cd "$cache" && sha256sum "$(basename "$image")" >"$(basename "$image").sha256")
echo "disk $(since "$t0")" >>"$timings"
log "wrote $image ($(du -h "$image" | cut -f1)) and $image.sha256"
