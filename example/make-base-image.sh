#!/usr/bin/env bash
# Makes the example's base image: a small Debian 12 (bookworm) system from
# debootstrap, on an MBR-partitioned disk, converted to qcow2 so the build
# exercises format detection.
#
#   /var/cache/imagefactory/debian-12-rootfs.tar.zst   the debootstrap tree
#                       (scripts/debian-rootfs.sh; reused by every checkout)
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
disk_size=2G
part_start=2048 # sectors: the partition starts at 1 MiB
label=cloudimg-rootfs

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
for tool in sfdisk mkfs.ext4 qemu-img zstd tar sha256sum; do
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

# The debootstrap tree is cached by scripts/debian-rootfs.sh (outside the
# clone, shared with the tests and benchmarks).
[[ ${REBUILD:-} == 1 ]] && rm -f "$image" "$image.sha256"
t0=$(now)
tarball=$("$here/../scripts/debian-rootfs.sh")
echo "debootstrap $(since "$t0")" >"$timings"

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
