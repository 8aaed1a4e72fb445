#!/usr/bin/env bash
# The example's provisioning (apt: update, upgrade, nginx-light; a page
# uploaded) with strategy = "chroot" and with strategy = "qemu"
# (boot under QEMU, SSH, shutdown, offline clean-up of the boot), each a
# whole `packer build` of the bootable Debian 12 disk (kernel, initrd,
# sshd, cloud-init: scripts/debian-rootfs.sh with
# DEBIAN_INCLUDE_EXTRA=linux-image-amd64,cloud-init), and prints the ratio.
# Run by bench/run.sh; alone: `bench/qemu-vs-chroot.sh` (root, after
# `make build tools`). BENCH_QEMU_RUNS (default 1) builds per strategy.
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
WORK=$CACHE/qemu-work
PACKER=${PACKER:-$ROOT/bin/packer}
PLUGIN=$ROOT/packer-plugin-imagefactory
N=${BENCH_QEMU_RUNS:-1}

log() { printf '%s bench-qemu: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

((EUID == 0)) || die "needs root"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "BENCH_QEMU_RUNS must be a whole number >= 1"
[[ -x $PACKER ]] || die "$PACKER not found (make tools)"
[[ -x $PLUGIN ]] || die "$PLUGIN not found (make build)"
for t in sfdisk mkfs.ext4 tar zstd qemu-system-x86_64; do
	command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"
done
mkdir -p "$CACHE"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
export PACKER_PLUGIN_PATH=$WORK/plugins PACKER_CACHE_DIR=$WORK/packer_cache CHECKPOINT_DISABLE=1
export IMAGEFACTORY_STATE_DIR=$WORK/state

# The disk: the tree on one MBR ext4 partition labelled cloudimg-rootfs,
# cached beside the tarball it was made from. BENCH_QEMU_DISK names another
# raw disk to use instead (it needs /vmlinuz, /initrd.img, sshd, cloud-init).
disk=${BENCH_QEMU_DISK:-$CACHE/debian-12-kernel.raw}
[[ -n ${BENCH_QEMU_DISK:-} ]] || tarball=$(DEBIAN_INCLUDE_EXTRA=linux-image-amd64,cloud-init "$ROOT/scripts/debian-rootfs.sh")
if [[ -z ${BENCH_QEMU_DISK:-} ]] && [[ ! -f $disk || $disk -ot $tarball ]]; then
	log "laying $tarball onto $disk"
	tree=$WORK/tree
	mkdir "$tree"
	tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' --acls --zstd -xpf "$tarball"
	rm -f "$disk.tmp"
	truncate -s 2G "$disk.tmp"
	echo "start=2048, type=83" | sfdisk -q --label dos "$disk.tmp"
	mkfs.ext4 -q -F -L cloudimg-rootfs -E offset=$((2048 * 512)) -d "$tree" "$disk.tmp" $(((2048 - 1) * 1024))k
	mv "$disk.tmp" "$disk"
	rm -rf "$tree"
fi

"$PACKER" plugins install --path "$PLUGIN" github.com/imagefactory/imagefactory >/dev/null
cat >"$WORK/build.pkr.hcl" <<-'HCL'
	packer {
	  required_plugins {
	    imagefactory = {
	      source  = "github.com/imagefactory/imagefactory"
	      version = ">= 0.1.0"
	    }
	  }
	}
	variable "base" { type = string }
	variable "strategy" { type = string }
	variable "out" { type = string }
	source "imagefactory" "bench" {
	  base_image       = var.base
	  output_directory = var.out
	  strategy         = var.strategy
	  boot_kernel      = var.strategy == "qemu" ? "image" : null
	  memory           = 1024
	}
	# example/build.pkr.hcl's provisioning (its elements provisioner works
	# in a chroot only): the same apt work and page, in both strategies.
	build {
	  sources = ["source.imagefactory.bench"]
	  provisioner "shell" {
	    inline = [
	      "apt-get update",
	      "apt-get -y upgrade",
	      "apt-get install -y --no-install-recommends nginx-light",
	      "systemctl enable nginx.service",
	      "rm -f /var/www/html/index.nginx-debian.html",
	      "apt-get clean",
	      "rm -rf /var/lib/apt/lists/*",
	    ]
	  }
	  provisioner "file" {
	    source      = "EXAMPLE/files/index.html"
	    destination = "/var/www/html/index.html"
	  }
	}
HCL
sed -i "s|EXAMPLE/|$ROOT/example/|" "$WORK/build.pkr.hcl"

build() { # strategy -> seconds
	local start end
	start=$EPOCHREALTIME
	"$PACKER" build -force -var "base=$disk" -var "strategy=$1" -var "out=$WORK/out-$1" "$WORK/build.pkr.hcl" >"$WORK/$1.log" 2>&1 ||
		{ tail -30 "$WORK/$1.log" >&2; die "packer build with strategy $1 failed"; }
	end=$EPOCHREALTIME
	rm -rf "$WORK/out-$1"
	awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f\n", b - a}'
}
median() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

chroot_s=() qemu_s=()
for ((i = 0; i < N; i++)); do
	log "packer build, strategy chroot ($((i + 1))/$N)"
	chroot_s+=("$(build chroot)")
	log "packer build, strategy qemu ($((i + 1))/$N)"
	qemu_s+=("$(build qemu)")
done
c=$(printf '%s\n' "${chroot_s[@]}" | median)
q=$(printf '%s\n' "${qemu_s[@]}" | median)
# The accelerator the qemu builds chose (hostcap's one decision; its reason on stderr).
accel=$(cd "$ROOT" && go run ./cmd/hostcap accelerator)
awk -v c="$c" -v q="$q" -v n="$N" -v accel="$accel" 'BEGIN {
	printf "same provisioning, whole packer build (median of %d): chroot %.1f s, qemu (%s: boot, SSH, shutdown) %.1f s: chroot %.1fx faster (target >= 5x: %s)\n",
		n, c, accel, q, q / c, (q / c >= 5) ? "PASS" : "MISS"
}'
