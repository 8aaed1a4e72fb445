#!/usr/bin/env bash
# The cost of a reproducible build (issue 16: under 5 %): the same
# tree-made build, a whole `packer build` (a bootable GPT disk from the
# cached debootstrap tree of the example, a shell provisioner, then
# imagefactory-scrub and imagefactory-sparsify to a zstd qcow2), with and
# without SOURCE_DATE_EPOCH, alternating, several runs each; prints the
# medians and their ratio, and whether the reproducible builds gave one
# sha256.
#
# Run by bench/run.sh (BENCH_REPRO=0 skips it); alone: `bench/repro.sh`
# (root, after `make build tools`). BENCH_REPRO_RUNS (default 3): builds per
# mode.
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
WORK=$CACHE/repro-work
PACKER=${PACKER:-$ROOT/bin/packer}
PLUGIN=$ROOT/packer-plugin-imagefactory
N=${BENCH_REPRO_RUNS:-3}
EPOCH=1767225600

log() { printf '%s bench-repro: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

((EUID == 0)) || die "needs root"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPRO_RUNS must be a whole number >= 1"
[[ -x $PACKER ]] || die "$PACKER not found (make tools)"
[[ -x $PLUGIN ]] || die "$PLUGIN not found (make build)"
for t in qemu-img debootstrap sha256sum findmnt losetup; do
	command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"
done

LOGS=$BENCH_DIR/out/repro
mkdir -p "$CACHE"
rm -rf "$WORK" "$LOGS"
mkdir -p "$WORK" "$LOGS"
# shellcheck source=bench/builds.sh
source "$BENCH_DIR/builds.sh"

# The debootstrap tree is the example's (example/build.pkr.hcl's include
# list), cached in /var/cache/imagefactory by its inputs: the first run on a
# machine makes it (minutes), untimed below.
cat >"$WORK/repro.pkr.hcl" <<HCL
packer {
  required_plugins {
    imagefactory = {
      source  = "github.com/imagefactory/imagefactory"
      version = ">= 0.0.1"
    }
  }
}
variable "out" {
  type = string
}
source "imagefactory" "bench" {
  output_directory = var.out
  mount_path       = "$WORK/mnt"
  bootstrap {
    tool    = "debootstrap"
    suite   = "bookworm"
    variant = "minbase"
    include = ["systemd-sysv", "udev", "linux-image-amd64", "openssh-server"]
  }
  format = "raw"
}
build {
  sources = ["source.imagefactory.bench"]
  provisioner "shell" {
    remote_file = "bench.sh"
    inline      = ["echo reproducible > /etc/imagefactory-bench"]
  }
  post-processors {
    post-processor "imagefactory-scrub" {}
    post-processor "imagefactory-sparsify" {
      format      = "qcow2"
      compression = "zstd"
    }
  }
}
HCL

# build MODE I: one build, its wall time in seconds in SECS (not in a
# subshell: the EXIT trap must see the running packer in CHILD).
build() {
	local mode=$1 i=$2 out=$WORK/out-$1-$2 t0 t1
	local -a env=(env -u SOURCE_DATE_EPOCH)
	[[ $mode == repro ]] && env=(env SOURCE_DATE_EPOCH=$EPOCH)
	t0=$EPOCHREALTIME
	CHILD=
	"${env[@]}" "$PACKER" build -var "out=$out" "$WORK/repro.pkr.hcl" >"$LOGS/$mode-$i.log" 2>&1 &
	CHILD=$!
	wait "$CHILD" || { tail -30 "$LOGS/$mode-$i.log" >&2; die "the $mode build $i failed (log: $LOGS/$mode-$i.log)"; }
	CHILD=
	t1=$EPOCHREALTIME
	sha256sum "$out/bench.qcow2" | cut -d' ' -f1 >"$LOGS/$mode-$i.sha256"
	rm -rf "$out"
	SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}')
}

log "warm-up build (makes the debootstrap tree on a new machine; untimed)"
build normal 0
declare -a normal=() repro=()
for ((i = 1; i <= N; i++)); do
	# Alternate the order, so neither mode always runs on a warmer cache.
	if ((i % 2)); then order=(normal repro); else order=(repro normal); fi
	for mode in "${order[@]}"; do
		build "$mode" "$i"
		s=$SECS
		log "$mode build $i: $s s"
		if [[ $mode == repro ]]; then repro+=("$s"); else normal+=("$s"); fi
	done
done

left=$(leaks)
[[ -z $left ]] || die "the builds left: $left"
mn=$(printf '%s\n' "${normal[@]}" | median)
mr=$(printf '%s\n' "${repro[@]}" | median)
sums=$(cat "$LOGS"/repro-*.sha256 | sort -u | wc -l)
echo "reproducible build cost (bench/repro.sh, $N builds each, the median; target: under 5 %)"
printf '  %-28s %8s s   (%s)\n' "normal build" "$mn" "${normal[*]}"
printf '  %-28s %8s s   (%s)\n' "SOURCE_DATE_EPOCH=$EPOCH" "$mr" "${repro[*]}"
awk -v n="$mn" -v r="$mr" 'BEGIN {printf "  cost: %+.1f %% (%s)\n", (r / n - 1) * 100, (r / n - 1) * 100 < 5 ? "MET" : "MISS"}'
echo "  qcow2 sha256 of the reproducible builds: $sums distinct ($( ((sums == 1)) && echo identical || echo DIFFERENT))"
