#!/usr/bin/env bash
# Many builds, one runner: throughput of 1, 2 and 4 `packer build`
# processes started together, each a chroot build on the same base image,
# as the jobs of one CI runner would run them (one state directory, the
# default mount paths under /run/imagefactory/mnt, one temporary
# directory). Prints builds per minute at each level and the ratio to one
# build at a time.
#
# The base: the Debian 12 tree of scripts/debian-rootfs.sh on a 2 GiB MBR
# disk, ext4 labelled cloudimg-rootfs (made by hand with sfdisk and
# mkfs.ext4 -d, as a cloud image is; cached in bench/cache by the
# tarball's hash). Each build copies it, runs a provisioner that does what
# a package install does without the network (read and compress /usr,
# write 64 MiB that stay in the image) and converts the result to qcow2.
#
# Run by bench/run.sh (BENCH_CONCURRENT=0 skips it); alone:
# `bench/concurrent.sh` (root, after `make build tools`).
# BENCH_CONCURRENT_RUNS (default 2): rounds per level, the median wall time
# is used.
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
WORK=$CACHE/concurrent-work
PACKER=${PACKER:-$ROOT/bin/packer}
PLUGIN=$ROOT/packer-plugin-imagefactory
N=${BENCH_CONCURRENT_RUNS:-2}
LEVELS=(1 2 4)
# Source names start with it: the builds' default mount paths are
# /run/imagefactory/mnt/<name>-<random>, checked for leftovers at the end.
NAME=benchconc

log() { printf '%s bench-concurrent: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

((EUID == 0)) || die "needs root"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONCURRENT_RUNS must be a whole number >= 1"
[[ -x $PACKER ]] || die "$PACKER not found (make tools)"
[[ -x $PLUGIN ]] || die "$PLUGIN not found (make build)"
for t in sfdisk mkfs.ext4 tar zstd findmnt losetup; do
	command -v "$t" >/dev/null || die "$t not found (scripts/install-deps.sh)"
done

mkdir -p "$CACHE"
rm -rf "$WORK"
mkdir -p "$WORK"

# shellcheck source=bench/builds.sh
source "$BENCH_DIR/builds.sh"
export TMPDIR=$WORK/tmp PACKER_TMP_DIR=$WORK/tmp
mkdir -p "$TMPDIR"

# The builds of a level run together; cleanup (builds.sh's trap) stops them
# all, as Ctrl-C stops packer: each releases what it holds.
PIDS=()
stop_builds() {
	local p
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	PIDS=()
}
eval "builds_$(declare -f cleanup)" # builds_cleanup: builds.sh's
cleanup() {
	stop_builds
	builds_cleanup
}

# --- the base image --------------------------------------------------------------

tarball=$("$ROOT/scripts/debian-rootfs.sh")
base=$CACHE/concurrent-base-v1-$(sha256sum "$tarball" | cut -c1-12).raw
if [[ ! -f $base ]]; then
	log "making the base image $base from $tarball"
	tree=$WORK/tree
	mkdir -p "$tree"
	tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' --acls -xpf "$tarball"
	truncate -s 2G "$base.tmp"
	echo "start=2048, type=83" | sfdisk -q --label dos "$base.tmp"
	mkfs.ext4 -q -F -L cloudimg-rootfs -E offset=1048576 -d "$tree" "$base.tmp" $(((2048 - 1) * 1024))k
	rm -rf "$tree"
	rm -f "$CACHE"/concurrent-base-*.raw
	mv "$base.tmp" "$base"
fi

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
	variable "out" { type = string }
	source "imagefactory" "bench" {
	  base_image       = var.base
	  output_directory = var.out
	  format           = "qcow2"
	}
	build {
	  sources = ["source.imagefactory.bench"]
	  provisioner "shell" {
	    inline = [
	      "tar -C / -cf - usr/lib usr/share | gzip -1 > /var/tmp/usr.tgz",
	      "rm /var/tmp/usr.tgz",
	      "head -c 64M /dev/urandom > /opt/payload",
	    ]
	  }
	}
HCL

# --- the levels ----------------------------------------------------------------------

# wall LEVEL ROUND: starts LEVEL builds together, waits for all, and sets
# WALL to the seconds from the first start to the last end (not printed: a
# command substitution's subshell would hide PIDS from cleanup). Any
# failure stops the bench.
wall() {
	local level=$1 round=$2 i p start end rc=0
	start=$EPOCHREALTIME
	for ((i = 1; i <= level; i++)); do
		# The source name is part of the default mount path.
		sed "s/\"bench\"/\"$NAME$level$i\"/; s/source.imagefactory.bench/source.imagefactory.$NAME$level$i/" \
			"$WORK/build.pkr.hcl" >"$WORK/build-$i.pkr.hcl"
		"$PACKER" build -color=false -var "base=$base" -var "out=$WORK/out-$level-$i" \
			"$WORK/build-$i.pkr.hcl" >"$WORK/log-$level-$round-$i" 2>&1 &
		PIDS+=($!)
	done
	for p in "${PIDS[@]}"; do
		wait "$p" || rc=$?
	done
	PIDS=()
	end=$EPOCHREALTIME
	if ((rc != 0)); then
		for ((i = 1; i <= level; i++)); do
			tail -20 "$WORK/log-$level-$round-$i" >&2
		done
		die "a build of level $level failed (logs above)"
	fi
	for ((i = 1; i <= level; i++)); do
		[[ -s $WORK/out-$level-$i/$NAME$level$i.qcow2 ]] || die "build $i of level $level made no image"
		rm -rf "$WORK/out-$level-$i"
	done
	WALL=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}')
}

declare -A median_of
for level in "${LEVELS[@]}"; do
	: >"$WORK/samples-$level"
	for ((r = 1; r <= N; r++)); do
		wall "$level" "$r"
		echo "$WALL" >>"$WORK/samples-$level"
		log "$level concurrent build(s), round $r: $WALL s"
	done
	median_of[$level]=$(median <"$WORK/samples-$level")
done

# What the builds must not leave: builds.sh's leaks, plus mounts and mount
# points at the default paths, journals, temporary files.
left() {
	leaks
	findmnt -rn -o TARGET | awk -v p="/run/imagefactory/mnt/$NAME" 'index($0, p) == 1 {print "mount: " $0}'
	compgen -G "/run/imagefactory/mnt/$NAME*" | sed 's/^/mount point: /' || true
	compgen -G "$WORK/state/*" | sed 's/^/journal: /' || true
	compgen -G "$WORK/tmp/*" | sed 's/^/temporary file: /' || true
}
leftovers=$(left)
[[ -z $leftovers ]] || die "left behind by the builds (a bug):"$'\n'"$leftovers"

one=${median_of[1]}
echo "Many builds, one runner: chroot builds on one base image ($(nproc) cores; median of $N round(s) per level)"
echo "base: $(basename "$base") (2 GiB raw, MBR, ext4, Debian 12); each build: copy, read and gzip /usr, write 64 MiB, qcow2"
{
	echo "concurrent builds|wall time|builds per minute|throughput vs 1|wall time vs 1"
	for level in "${LEVELS[@]}"; do
		awk -v n="$level" -v w="${median_of[$level]}" -v o="$one" 'BEGIN {
			printf "%d|%.1f s|%.2f|%.2fx|%.2fx\n", n, w, n * 60 / w, (n / w) / (1 / o), w / o
		}'
	done
} | column -t -s '|' -o ' | '
echo "samples (seconds):"
for level in "${LEVELS[@]}"; do
	printf '  %d: %s\n' "$level" "$(tr '\n' ' ' <"$WORK/samples-$level")"
done
echo "nothing left mounted, attached or running; no journal or temporary file left"
