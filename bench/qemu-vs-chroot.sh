#!/usr/bin/env bash
# The example's provisioning (apt: update, upgrade, nginx-light; a page
# uploaded) of one bootable Debian 12 disk, each a whole `packer build`, with
# packer-plugin-qemu (the peer: boot the disk, SSH, shutdown), our
# strategy = "qemu" (boot, SSH, shutdown, offline clean-up of the boot) and
# our strategy = "chroot", under one accelerator; prints the three times and
# the ratios against the targets.
#
# The disk (GPT, GRUB for BIOS and UEFI, kernel, sshd, cloud-init) is made
# once by our builder from scripts/debian-rootfs.sh's tree with
# DEBIAN_INCLUDE_EXTRA=linux-image-amd64,cloud-init, and cached in
# bench/cache by the tarball's hash. Both qemu builds boot it through its own
# GRUB and get root's SSH key from a cloud-init NoCloud seed (cidata).
#
# Run by bench/run.sh; alone: `bench/qemu-vs-chroot.sh` (root, after
# `make build tools peer-qemu`). BENCH_QEMU_RUNS (default 1): builds per
# tool, the median is printed. BENCH_ACCEL (kvm or tcg) overrides
# `go run ./cmd/hostcap accelerator`. BENCH_QEMU_DISK names another raw disk
# to use (it must boot by itself and run sshd and cloud-init).
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
WORK=$CACHE/qemu-work
PACKER=${PACKER:-$ROOT/bin/packer}
PLUGIN=$ROOT/packer-plugin-imagefactory
PEER=$ROOT/bin/packer-plugin-qemu
N=${BENCH_QEMU_RUNS:-1}
# The disk's recipe (below); change it when the recipe changes, and the next
# run makes a new disk instead of reusing the cached one.
DISK_VERSION=v1-gpt-2G

log() { printf '%s bench-qemu: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

((EUID == 0)) || die "needs root"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "BENCH_QEMU_RUNS must be a whole number >= 1"
[[ -x $PACKER ]] || die "$PACKER not found (make tools)"
[[ -x $PLUGIN ]] || die "$PLUGIN not found (make build)"
[[ -x $PEER ]] || die "$PEER not found (make peer-qemu)"
# xorriso: packer-plugin-qemu makes its cd_content ISO with it.
for t in qemu-system-x86_64 qemu-img xorriso ssh-keygen sha256sum findmnt losetup; do
	command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"
done

accel=${BENCH_ACCEL:-}
if [[ -z $accel ]]; then
	accel=$(go -C "$ROOT" run ./cmd/hostcap accelerator) || die "go run ./cmd/hostcap accelerator failed"
fi
[[ $accel == kvm || $accel == tcg ]] || die "accelerator \"$accel\": want kvm or tcg (BENCH_ACCEL)"
peer_version=$("$PEER" describe | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')
[[ -n $peer_version ]] || die "$PEER describe reports no version"

LOGS=$BENCH_DIR/out/qemu-vs-chroot
mkdir -p "$CACHE"
rm -rf "$WORK" "$LOGS"
mkdir -p "$LOGS"
mkdir -p "$WORK"

# shellcheck source=bench/builds.sh
source "$BENCH_DIR/builds.sh"
# packer-plugin-qemu writes its cd_content ISO under TMPDIR: keep it in $WORK.
export TMPDIR=$WORK/tmp
mkdir -p "$TMPDIR"
"$PACKER" plugins install --path "$PEER" github.com/hashicorp/qemu >/dev/null

# --- the disk ------------------------------------------------------------------

if [[ -n ${BENCH_QEMU_DISK:-} ]]; then
	disk=$BENCH_QEMU_DISK
	[[ -f $disk ]] || die "BENCH_QEMU_DISK $disk not found"
else
	tarball=$(DEBIAN_INCLUDE_EXTRA=linux-image-amd64,cloud-init "$ROOT/scripts/debian-rootfs.sh")
	disk=$CACHE/debian-12-boot-$DISK_VERSION-$(sha256sum "$tarball" | cut -c1-12).raw
	if [[ ! -f $disk ]]; then
		log "making the bootable disk $disk from $tarball (our builder, chroot, no provisioner)"
		cat >"$WORK/disk.pkr.hcl" <<-'HCL'
			variable "tarball" { type = string }
			variable "out" { type = string }
			variable "mnt" { type = string }
			source "imagefactory" "disk" {
			  source_rootfs    = var.tarball
			  output_directory = var.out
			  mount_path       = var.mnt
			  image_name       = "disk"
			  format           = "raw"
			  disk_size        = "2G"
			}
			build {
			  sources = ["source.imagefactory.disk"]
			}
		HCL
		run_packer "$WORK/disk.log" build -var "tarball=$tarball" -var "out=$WORK/disk-out" -var "mnt=$WORK/mnt" "$WORK/disk.pkr.hcl" ||
			die "making the disk failed (log above)"
		rm -f "$CACHE"/debian-12-boot-*.raw "$CACHE/debian-12-kernel.raw" # older recipes and tarballs
		mv "$WORK/disk-out/disk.raw" "$disk"
		rm -rf "$WORK/disk-out"
	fi
fi

# --- the builds ------------------------------------------------------------------

# The peer gets root's key as our builder's default seed gives it (the same
# user-data as internal/qemu.DefaultUserData for root), and a resolver: the
# disk's resolv.conf is empty and nothing in it fills one (networkd without
# resolved), so apt could not resolve the archive. Our qemu strategy writes
# QEMU's resolver offline for the boot and puts the file back after it; the
# peer's user must do it in the guest, and the file stays in its image.
ssh-keygen -q -t ed25519 -N '' -C bench -f "$WORK/id_ed25519"
cat >"$WORK/user-data" <<-EOF
	#cloud-config
	disable_root: false
	users: []
	ssh_authorized_keys:
	  - "$(cat "$WORK/id_ed25519.pub")"
	preserve_hostname: true
	locale: false
	apt:
	  preserve_sources_list: true
	write_files:
	  - path: /etc/resolv.conf
	    content: "nameserver 10.0.2.3\\n"
EOF

cat >"$WORK/build.pkr.hcl" <<-'HCL'
	packer {
	  required_plugins {
	    imagefactory = {
	      source  = "github.com/imagefactory/imagefactory"
	      version = ">= 0.1.0"
	    }
	    qemu = {
	      source  = "github.com/hashicorp/qemu"
	      version = "= PEER_VERSION"
	    }
	  }
	}
	variable "base" { type = string }
	variable "strategy" {
	  type    = string
	  default = "chroot"
	}
	variable "accel" { type = string }
	variable "out" { type = string }
	variable "mnt" { type = string }
	variable "key" { type = string }
	variable "user_data" { type = string }

	# Ours: the disk's own GRUB under qemu (SeaBIOS), our default cidata seed.
	# The same shutdown as the peer's: without it ours presses the ACPI
	# button, which this image (no D-Bus, no logind) ignores, and sends
	# ctrl-alt-delete 20 s later.
	source "imagefactory" "bench" {
	  base_image       = var.base
	  output_directory = var.out
	  mount_path       = var.mnt
	  strategy         = var.strategy
	  accelerator      = var.strategy == "qemu" ? var.accel : null
	  memory           = 1024
	  cpus             = 1
	  shutdown_command = var.strategy == "qemu" ? "poweroff" : null
	}

	# The peer, as its user boots a disk image: the same disk, accelerator,
	# memory and CPUs; its defaults otherwise (machine pc, virtio disk and
	# NIC, VGA behind a VNC server on 127.0.0.1), but skip_resize_disk so
	# the disk keeps its size (its default grows it to 40 GiB, and
	# cloud-init would then grow the root filesystem in the guest).
	source "qemu" "bench" {
	  disk_image           = true
	  iso_url              = var.base
	  iso_checksum         = "none"
	  format               = "raw"
	  skip_resize_disk     = true
	  accelerator          = var.accel
	  headless             = true
	  memory               = 1024
	  cpus                 = 1
	  output_directory     = var.out
	  vm_name              = "bench.raw"
	  cd_label             = "cidata"
	  cd_content = {
	    "user-data" = file(var.user_data)
	    "meta-data" = "instance-id: iid-bench\nlocal-hostname: localhost\n"
	  }
	  ssh_username         = "root"
	  ssh_private_key_file = var.key
	  ssh_timeout          = "10m" # our builder's default; TCG boots are slow
	  shutdown_command     = "poweroff"
	}

	# example/build.pkr.hcl's provisioning (its elements provisioner works
	# in a chroot only): the same apt work and page for all three.
	build {
	  sources = ["source.imagefactory.bench", "source.qemu.bench"]
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
sed -i -e "s|EXAMPLE/|$ROOT/example/|" -e "s|PEER_VERSION|$peer_version|" "$WORK/build.pkr.hcl"

# build peer|qemu|chroot ROUND sets S to the wall time of one whole packer
# build, and keeps its log (with timestamps) in bench/out/qemu-vs-chroot/.
S=
build() {
	local only=imagefactory.bench strategy=$1 start
	[[ $1 == peer ]] && only=qemu.bench strategy=chroot
	start=$EPOCHREALTIME
	run_packer "$WORK/$1.log" build -timestamp-ui -force -only="$only" -var "base=$disk" -var "strategy=$strategy" -var "accel=$accel" \
		-var "out=$WORK/out-$1" -var "mnt=$WORK/mnt" -var "key=$WORK/id_ed25519" -var "user_data=$WORK/user-data" "$WORK/build.pkr.hcl" ||
		die "packer build ($1) failed (log above)"
	S=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
	rm -rf "$WORK/out-$1"
	cp "$WORK/$1.log" "$LOGS/$1-$2.log"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
peer_s=() qemu_s=() chroot_s=()
for ((i = 0; i < N; i++)); do
	# The two boots alternate which goes first, so that drift in the
	# machine's load hits both alike.
	order=(peer qemu)
	((i % 2)) && order=(qemu peer)
	for t in "${order[@]}" chroot; do
		log "packer build: $t ($((i + 1))/$N, $accel)"
		build "$t" $((i + 1))
		log "  $t: $S s (load $(cut -d' ' -f1-3 /proc/loadavg))"
		case $t in
		peer) peer_s+=("$S") ;;
		qemu) qemu_s+=("$S") ;;
		chroot) chroot_s+=("$S") ;;
		esac
	done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
p=$(printf '%s\n' "${peer_s[@]}" | median)
q=$(printf '%s\n' "${qemu_s[@]}" | median)
c=$(printf '%s\n' "${chroot_s[@]}" | median)

cleanup
trap - EXIT
if [[ -n $(leaks) ]]; then
	leaks >&2
	die "left behind after the builds (a bug)"
fi

awk -v p="$p" -v q="$q" -v c="$c" -v n="$N" -v accel="$accel" -v pv="$peer_version" \
	-v ls="$load_start" -v le="$load_end" -v disk="$(basename "$disk")" 'BEGIN {
	printf "same provisioning of one bootable Debian 12 disk (%s), whole packer build, accelerator %s, median of %d; load average %s at the start, %s at the end:\n", disk, accel, n, ls, le
	printf "  packer-plugin-qemu %s (boot, SSH, shutdown): %.1f s\n", pv, p
	printf "  our qemu strategy (boot, SSH, shutdown, offline clean-up): %.1f s: %.2fx (packer-plugin-qemu / ours; target >= 1.00: %s)\n", q, p / q, (p / q >= 1) ? "PASS" : "MISS"
	printf "  our chroot strategy: %.1f s: %.1fx faster than packer-plugin-qemu (target >= 10x: %s); %.1fx faster than our qemu strategy\n", c, p / c, (p / c >= 10) ? "PASS" : "MISS", q / c
}'
echo "  (the builds' logs, with timestamps: $LOGS)"
