#!/usr/bin/env bash
# The cost of a reproducible build (issue 16: under 5 %): the same
# tree-made build, a whole `packer build` (a bootable GPT disk from the
# cached debootstrap tree of the example, a shell provisioner, then
# imagefactory-scrub and imagefactory-sparsify to a zstd qcow2), with and
# without SOURCE_DATE_EPOCH, alternating, several runs each; prints the
# medians and their ratio, and whether the reproducible builds gave one
# sha256. The anchor is the same build without SOURCE_DATE_EPOCH (the
# normal mode); the target, the reproducible one's wall time under 5 %
# more. Beside the wall time: each build's CPU time (user + system of
# packer, the plugin and every tool they ran, from bash's `times`), which
# other work on a shared machine disturbs less, the median of the paired
# differences (each round's repro - normal), and the two steps whose work
# the mode changes, read from the build's log: the working disk (mke2fs,
# then the ctime clamp) and the zstd conversion (qemu-img -W, then the
# canonical layout).
#
# Run by bench/run.sh (BENCH_REPRO=0 skips it); alone: `bench/repro.sh`
# (root, after `make build tools`). BENCH_REPRO_RUNS (default 7): builds per
# mode.
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
WORK=$CACHE/repro-work
PACKER=${PACKER:-$ROOT/bin/packer}
PLUGIN=$ROOT/packer-plugin-imagefactory
N=${BENCH_REPRO_RUNS:-7}
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

# cpu: the CPU seconds (user + system) of this shell's waited-for
# children so far, from bash's `times` (its second line), run in this
# shell: in a $(...) subshell it would count the subshell's own.
cpu() {
	times >"$WORK/times"
	CPU=$(tail -1 "$WORK/times" | awk '{
		s = 0
		for (i = 1; i <= NF; i++) { split($i, ms, "m"); sub("s", "", ms[2]); s += ms[1] * 60 + ms[2] }
		printf "%.2f\n", s
	}')
}

# secs PATTERN LOG: the duration a log line matching PATTERN ends with
# ("in 2.112s", "in 850ms"), in seconds.
secs() {
	grep -o "$1 in [0-9.]*m\?s" "$2" | tail -1 | awk '{v = $NF; if (v ~ /ms$/) {sub("ms", "", v); v /= 1000} else sub("s", "", v); printf "%.3f\n", v}'
}

# build MODE I: one build, its wall time in seconds in SECS and its CPU
# seconds in CPUS (not in a subshell: the EXIT trap must see the running
# packer in CHILD).
build() {
	local mode=$1 i=$2 out=$WORK/out-$1-$2 t0 t1 c0 c1
	local -a env=(env -u SOURCE_DATE_EPOCH)
	[[ $mode == repro ]] && env=(env "SOURCE_DATE_EPOCH=$EPOCH")
	cpu
	c0=$CPU
	t0=$EPOCHREALTIME
	CHILD=
	"${env[@]}" "$PACKER" build -var "out=$out" "$WORK/repro.pkr.hcl" >"$LOGS/$mode-$i.log" 2>&1 &
	CHILD=$!
	wait "$CHILD" || { tail -30 "$LOGS/$mode-$i.log" >&2; die "the $mode build $i failed (log: $LOGS/$mode-$i.log)"; }
	CHILD=
	t1=$EPOCHREALTIME
	cpu
	c1=$CPU
	sha256sum "$out/bench.qcow2" | cut -d' ' -f1 >"$LOGS/$mode-$i.sha256"
	rm -rf "$out"
	SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}')
	CPUS=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f\n", b - a}')
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
log "warm-up build (makes the debootstrap tree on a new machine; untimed)"
build normal 0
declare -a normal=() repro=() ncpu=() rcpu=() dwall=() dcpu=() ndisk=() rdisk=() nconv=() rconv=()
for ((i = 1; i <= N; i++)); do
	# Alternate the order, so neither mode always runs on a warmer cache.
	if ((i % 2)); then order=(normal repro); else order=(repro normal); fi
	for mode in "${order[@]}"; do
		build "$mode" "$i"
		disk=$(secs "made" "$LOGS/$mode-$i.log")
		conv=$(secs "bench.qcow2 ([0-9.]* [KMGT]\?i\?B)" "$LOGS/$mode-$i.log")
		log "$mode build $i: $SECS s, CPU $CPUS s (working disk $disk s, conversion $conv s)"
		if [[ $mode == repro ]]; then
			repro+=("$SECS") rcpu+=("$CPUS") rdisk+=("$disk") rconv+=("$conv")
		else
			normal+=("$SECS") ncpu+=("$CPUS") ndisk+=("$disk") nconv+=("$conv")
		fi
	done
	dwall+=("$(awk -v r="${repro[-1]}" -v n="${normal[-1]}" 'BEGIN {printf "%.2f\n", r - n}')")
	dcpu+=("$(awk -v r="${rcpu[-1]}" -v n="${ncpu[-1]}" 'BEGIN {printf "%.2f\n", r - n}')")
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

left=$(leaks)
[[ -z $left ]] || die "the builds left: $left"
med() { printf '%s\n' "$@" | median; }
pct() { awk -v n="$1" -v r="$2" 'BEGIN {printf "%+.1f %%", (r / n - 1) * 100}'; }
mn=$(med "${normal[@]}") mr=$(med "${repro[@]}")
cn=$(med "${ncpu[@]}") cr=$(med "${rcpu[@]}")
sums=$(cat "$LOGS"/repro-*.sha256 | sort -u | wc -l)
echo "reproducible build cost (bench/repro.sh, $N builds each, interleaved, the median)"
echo "  anchor: the same build without SOURCE_DATE_EPOCH; target (issue 16): the reproducible build under 5 % slower"
echo "  load average: $load0 at the start, $load1 at the end (2 cores)"
printf '  %-28s %8s s wall  %8s s CPU   (wall: %s)\n' "normal build" "$mn" "$cn" "${normal[*]}"
printf '  %-28s %8s s wall  %8s s CPU   (wall: %s)\n' "SOURCE_DATE_EPOCH=$EPOCH" "$mr" "$cr" "${repro[*]}"
printf '  %-28s %8s s wall  %8s s CPU   (paired, repro - normal; wall: %s)\n' "difference, median of pairs" "$(med "${dwall[@]}")" "$(med "${dcpu[@]}")" "${dwall[*]}"
# meanse DIFFS BASES: the mean paired difference and its standard error,
# in percent of the normal builds' mean (N >= 2).
meanse() {
	awk -v d="$1" -v b="$2" 'BEGIN {
		n = split(d, x, " "); split(b, y, " "); s = 0; t = 0
		for (i = 1; i <= n; i++) { s += x[i]; t += y[i] }
		m = s / n; v = 0
		for (i = 1; i <= n; i++) v += (x[i] - m) ^ 2
		se = n > 1 ? sqrt(v / (n - 1) / n) : 0
		printf "%+.1f %% +- %.1f", m / (t / n) * 100, se / (t / n) * 100
	}'
}
printf '  %-28s %8s wall   %s CPU (percent of the normal mean, +- one standard error)\n' "difference, mean of pairs" \
	"$(meanse "${dwall[*]}" "${normal[*]}")" "$(meanse "${dcpu[*]}" "${ncpu[*]}")"
printf '  %-28s %8s s normal %7s s repro\n' "step: working disk" "$(med "${ndisk[@]}")" "$(med "${rdisk[@]}")"
printf '  %-28s %8s s normal %7s s repro\n' "step: zstd qcow2 conversion" "$(med "${nconv[@]}")" "$(med "${rconv[@]}")"
awk -v n="$mn" -v r="$mr" -v pw="$(pct "$mn" "$mr")" -v pc="$(pct "$cn" "$cr")" 'BEGIN {
	printf "  cost: %s wall (%s), %s CPU\n", pw, (r / n - 1) * 100 < 5 ? "MET" : "MISS", pc
}'
echo "  qcow2 sha256 of the reproducible builds: $sums distinct ($( ((sums == 1)) && echo identical || echo DIFFERENT))"
