#!/usr/bin/env bash
# The same provisioning of an arm64 disk three ways, each a whole `packer
# build` of our builder, in one run: in the chroot under qemu-user
# (strategy "chroot", binfmt_misc), in the qemu strategy under
# qemu-system-aarch64 with TCG (boot, SSH, shutdown, offline clean-up), and
# the same work in an amd64 chroot on an amd64 disk, the native floor.
# Prints the times and the ratios against the target (the chroot at least
# 3x faster than full-system emulation).
#
# The work: apt-get update and an install of a package set from Debian's
# archive (the same for all three; apt's download is the same bytes), then
# gzip -9 of a 21 MB text file made by seq (CPU-bound). The provisioner
# prints each part's time, shown per way.
#
# The disks are made once by our builder from its bootstrap block (arm64:
# debootstrap --foreign plus the second stage under qemu-user, the tree of
# TestAccArm64; amd64: the tree of TestAccBootstrapBoots) and cached in
# bench/cache (arm64-*.raw, amd64-*.raw: delete them to remake). The first
# run on a machine bootstraps the arm64 tree: many minutes.
#
# Run by bench/run.sh (BENCH_ARM64=0 skips it) or alone: `make bench-arm64`
# (root, after `make build tools`). BENCH_ARM64_RUNS (default 1): builds
# per way, the median is printed.
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
WORK=$CACHE/arm64-work
PACKER=${PACKER:-$ROOT/bin/packer}
PLUGIN=$ROOT/packer-plugin-imagefactory
N=${BENCH_ARM64_RUNS:-1}
# The disks' recipe (below); change it when the recipe changes.
DISK_VERSION=v1-gpt-3G
PACKAGES="nginx-light python3-minimal"
SEQ_LINES=3000000 # seq 1 3000000: 21 MB of text for gzip -9

log() { printf '%s bench-arm64: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

((EUID == 0)) || die "needs root"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "BENCH_ARM64_RUNS must be a whole number >= 1"
[[ -x $PACKER ]] || die "$PACKER not found (make tools)"
[[ -x $PLUGIN ]] || die "$PLUGIN not found (make build)"
for t in qemu-system-aarch64 qemu-aarch64-static debootstrap findmnt losetup; do
	command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"
done
[[ -f /usr/share/AAVMF/AAVMF_CODE.fd ]] || die "AAVMF not found (scripts/install-deps.sh: qemu-efi-aarch64)"

LOGS=$BENCH_DIR/out/arm64
mkdir -p "$CACHE"
rm -rf "$WORK" "$LOGS"
mkdir -p "$LOGS" "$WORK"

# shellcheck source=bench/builds.sh
source "$BENCH_DIR/builds.sh"

# --- the disks -----------------------------------------------------------------

# disk ARCH INCLUDE sets DISK to a bootable GPT disk of a bootstrapped
# bookworm tree, made by our builder, cached. (Not run in a $(...)
# subshell: a signal to this script must reach the build it waits for.)
DISK=
disk() {
	local a=$1 include=$2 d=$CACHE/$1-bookworm-$DISK_VERSION.raw
	if [[ ! -f $d ]]; then
		log "making the $a disk $d (our builder: bootstrap arch $a, no provisioner)"
		cat >"$WORK/disk-$a.pkr.hcl" <<-HCL
			source "imagefactory" "disk" {
			  bootstrap {
			    tool    = "debootstrap"
			    suite   = "bookworm"
			    variant = "minbase"
			    arch    = "$a"
			    include = $include
			  }
			  output_directory = "$WORK/disk-$a"
			  mount_path       = "$WORK/mnt-disk"
			  image_name       = "disk"
			  disk_size        = "3G"
			}
			build {
			  sources = ["source.imagefactory.disk"]
			}
		HCL
		run_packer "$WORK/disk-$a.log" build "$WORK/disk-$a.pkr.hcl" || die "making the $a disk failed (log above)"
		grep -E 'Root tree|Second stage' "$WORK/disk-$a.log" >&2 || true
		mv "$WORK/disk-$a/disk.raw" "$d"
		rm -rf "$WORK/disk-$a"
	fi
	DISK=$d
}
# The packages of TestAccArm64 and of TestAccBootstrapBoots: their trees.
disk arm64 '["systemd-sysv", "udev", "linux-image-arm64", "openssh-server", "grub-efi-arm64-bin"]'
arm64_disk=$DISK
disk amd64 '["systemd-sysv", "udev", "linux-image-amd64", "openssh-server"]'
amd64_disk=$DISK

# --- the builds ------------------------------------------------------------------

cat >"$WORK/build.pkr.hcl" <<-HCL
	variable "base" { type = string }
	variable "strategy" { type = string }
	variable "out" { type = string }
	source "imagefactory" "bench" {
	  base_image       = var.base
	  output_directory = var.out
	  mount_path       = "$WORK/mnt"
	  strategy         = var.strategy
	  memory           = 1024
	  cpus             = 1
	  inject_ssh_key   = var.strategy == "qemu" ? true : null
	  shutdown_command = var.strategy == "qemu" ? "systemctl poweroff" : null
	}
	build {
	  sources = ["source.imagefactory.bench"]
	  provisioner "shell" {
	    inline = [
	      "t0=\$(date +%s.%N)",
	      "apt-get update -q",
	      "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES",
	      "t1=\$(date +%s.%N)",
	      "seq 1 $SEQ_LINES > /var/tmp/bench.txt",
	      "t2=\$(date +%s.%N)",
	      "gzip -9 -c /var/tmp/bench.txt > /var/tmp/bench.txt.gz",
	      "t3=\$(date +%s.%N)",
	      "rm -f /var/tmp/bench.txt /var/tmp/bench.txt.gz",
	      "echo BENCH \$(uname -m) apt \$(echo \"\$t1 - \$t0\" | awk '{print \$1 - \$3}') gzip \$(echo \"\$t3 - \$t2\" | awk '{print \$1 - \$3}')",
	    ]
	  }
	}
HCL

# build NAME DISK STRATEGY ROUND: the wall time of one whole packer build
# in S, the provisioner's own apt and gzip times in APT and GZ.
S= APT= GZ=
build() {
	local start line
	start=$EPOCHREALTIME
	run_packer "$WORK/$1.log" build -timestamp-ui -force -var "base=$2" -var "strategy=$3" -var "out=$WORK/out-$1" "$WORK/build.pkr.hcl" ||
		die "packer build ($1) failed (log above)"
	S=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
	line=$(grep -o 'BENCH [a-z0-9_]* apt [0-9.]* gzip [0-9.]*' "$WORK/$1.log" | tail -1)
	[[ -n $line ]] || die "no BENCH line in the $1 build's log"
	APT=$(awk '{print $4}' <<<"$line")
	GZ=$(awk '{print $6}' <<<"$line")
	rm -rf "$WORK/out-$1"
	cp "$WORK/$1.log" "$LOGS/$1-$4.log"
}
# quiet_qemu waits (up to 30 min) until no other QEMU system emulator runs
# on the machine: a TCG boot beside another one measures the other's load.
quiet_qemu() {
	local i
	for ((i = 0; i < 360; i++)); do
		pgrep -f '^[^ ]*qemu-system-' >/dev/null || return 0
		((i == 0)) && log "waiting for another QEMU on this machine to end: $(pgrep -af '^[^ ]*qemu-system-' | cut -c1-80 | head -1)"
		sleep 5
	done
	log "another QEMU still runs after 30 min: measuring beside it"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A s apt gz
for ((i = 0; i < N; i++)); do
	for way in arm64-chroot arm64-qemu amd64-chroot; do
		case $way in
		arm64-chroot) d=$arm64_disk strategy=chroot ;;
		arm64-qemu) d=$arm64_disk strategy=qemu ;;
		amd64-chroot) d=$amd64_disk strategy=chroot ;;
		esac
		quiet_qemu
		log "packer build: $way ($((i + 1))/$N)"
		build "$way" "$d" "$strategy" $((i + 1))
		log "  $way: $S s (apt $APT s, gzip -9 $GZ s; load $(cut -d' ' -f1-3 /proc/loadavg))"
		s[$way]+="$S " apt[$way]+="$APT " gz[$way]+="$GZ "
	done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
med() { tr ' ' '\n' <<<"$1" | grep . | median; }

cleanup
trap - EXIT
if [[ -n $(leaks) ]]; then
	leaks >&2
	die "left behind after the builds (a bug)"
fi

awk -v cs="$(med "${s[arm64-chroot]}")" -v qs="$(med "${s[arm64-qemu]}")" -v ns="$(med "${s[amd64-chroot]}")" \
	-v ca="$(med "${apt[arm64-chroot]}")" -v qa="$(med "${apt[arm64-qemu]}")" -v na="$(med "${apt[amd64-chroot]}")" \
	-v cg="$(med "${gz[arm64-chroot]}")" -v qg="$(med "${gz[arm64-qemu]}")" -v ng="$(med "${gz[amd64-chroot]}")" \
	-v n="$N" -v ls="$load_start" -v le="$load_end" -v pk="$PACKAGES" 'BEGIN {
	printf "the same provisioning of a bookworm disk (apt-get install %s from the archive; gzip -9 of 21 MB), whole packer build, median of %d; load average %s at the start, %s at the end:\n", pk, n, ls, le
	printf "  %-50s %8s %8s %8s\n", "", "build s", "apt s", "gzip s"
	printf "  %-50s %8.1f %8.1f %8.1f\n", "arm64, qemu strategy (qemu-system-aarch64, TCG)", qs, qa, qg
	printf "  %-50s %8.1f %8.1f %8.1f\n", "arm64, chroot (qemu-user, binfmt_misc)", cs, ca, cg
	printf "  %-50s %8.1f %8.1f %8.1f\n", "amd64, chroot (native floor)", ns, na, ng
	printf "  chroot under qemu-user vs full-system emulation: %.1fx faster (whole build; target >= 3x: %s); apt %.1fx, gzip %.1fx\n", qs / cs, (qs / cs >= 3) ? "PASS" : "MISS", qa / ca, qg / cg
	printf "  qemu-user vs native: the arm64 chroot build takes %.1fx the amd64 one; apt %.1fx, gzip %.1fx\n", cs / ns, ca / na, cg / ng
}'
echo "  (the builds' logs, with timestamps: $LOGS)"
