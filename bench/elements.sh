#!/usr/bin/env bash
# The imagefactory-elements provisioner's own overhead for 20 elements with
# empty hooks (one in each of pre-install.d, install.d, post-install.d and
# finalise.d), on the Debian 12 tree of scripts/debian-rootfs.sh, beside:
#   - DIB itself (Debian's python3-diskimage-builder): element-info for the
#     expansion, generate_hooks from its lib/common-functions, and per
#     inside phase what run_d_in_target does (bind the hooks tree read-only
#     on /tmp/in_target.d, chroot dib-run-parts, unmount);
#   - a bare chroot loop over the same 80 scripts (one chroot per phase).
# Ours = bench/elementsbench (Prepare + Provision, in-process timing).
# Overhead = ours - bare loop, paired runs; target < 2 s. Called by bench/run.sh; also
# runs alone (as root). Writes bench/out/elements.txt.
set -euo pipefail
export LC_ALL=C
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache
OUT=$BENCH_DIR/out
RUNS=${BENCH_ELEMENTS_RUNS:-5}
DIB_RUNS=${BENCH_ELEMENTS_DIB_RUNS:-3} # DIB takes tens of seconds a run here
DIB_LIB=/usr/lib/python3/dist-packages/diskimage_builder/lib
N=20

log() { printf '%s bench-elements: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
((EUID == 0)) || die "needs root (chroot, bind mounts)"
[[ -d $DIB_LIB ]] || die "python3-diskimage-builder is not installed (scripts/install-deps.sh)"
mkdir -p "$CACHE" "$OUT"

WORK=$(mktemp -d "$CACHE/elements.XXXXXX")
cleanup() {
	{ findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r || true; } | while read -r m; do umount "$m" || umount -l "$m" || true; done
	rm -rf "$WORK"
	if [[ -d ${TREE:-}/tmp/in_target.d ]]; then
		umount "$TREE/tmp/in_target.d" 2>/dev/null || true
		rmdir "$TREE/tmp/in_target.d" || true
	fi
}
trap cleanup EXIT

tarball=$("$ROOT/scripts/debian-rootfs.sh")
TREE=$CACHE/elements-tree
cleanup # what an interrupted run left in the tree
WORK=$(mktemp -d "$CACHE/elements.XXXXXX")
if [[ ! -f $TREE/.from || $(cat "$TREE/.from") != "$tarball $(stat -c %Y "$tarball")" ]]; then
	log "unpacking $tarball"
	rm -rf "$TREE"
	mkdir -p "$TREE"
	tar -C "$TREE" --numeric-owner --zstd -xpf "$tarball"
	echo "$tarball $(stat -c %Y "$tarball")" >"$TREE/.from"
fi

# The elements: el01..el20, each with one empty hook per inside phase, a
# chain of element-deps (el02 depends on el01...), and for DIB only an
# element providing operating-system (the provisioner gets it from the image).
ELS=$WORK/elements
names=()
for i in $(seq -w 1 $N); do
	e=$ELS/el$i
	for ph in pre-install.d install.d post-install.d finalise.d; do
		mkdir -p "$e/$ph"
		printf '#!/bin/sh\n' >"$e/$ph/50-el$i"
		chmod 755 "$e/$ph/50-el$i"
	done
	((10#$i > 1)) && printf 'el%02d\n' $((10#$i - 1)) >"$e/element-deps"
	names+=("el$i")
done
mkdir -p "$ELS/dib-os"
echo operating-system >"$ELS/dib-os/element-provides"

median() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
now() { echo "$EPOCHREALTIME"; }

log "building elementsbench"
(cd "$ROOT" && go build -o "$OUT/elementsbench" ./bench/elementsbench)

ours_once() {
	"$OUT/elementsbench" -tree "$TREE" -elements-path "$ELS" -elements "$(IFS=,; echo "${names[*]}")" -runs 1
}
dib_once() {
	local hooks=$WORK/dib-hooks t0
	rm -rf "$hooks"
	t0=$(now)
	(
		export _LIB=$DIB_LIB ELEMENTS_PATH=$ELS TMP_HOOKS_PATH=$hooks
		eval "$(/usr/bin/python3 "$DIB_LIB/element-info.py" --env dib-os "${names[@]}")"
		source "$DIB_LIB/common-functions"
		generate_hooks >/dev/null
		cp "$DIB_LIB/dib-run-parts" "$hooks"
		for ph in pre-install install post-install finalise; do
			mkdir "$TREE/tmp/in_target.d"
			mount --bind "$hooks" "$TREE/tmp/in_target.d"
			mount -o remount,ro,bind "$hooks" "$TREE/tmp/in_target.d"
			chroot "$TREE" env -u TMPDIR PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
				sh -c "/tmp/in_target.d/dib-run-parts /tmp/in_target.d/$ph.d" >/dev/null 2>&1
			umount "$TREE/tmp/in_target.d"
			rmdir "$TREE/tmp/in_target.d"
		done
	)
	awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.6f\n", b - a}'
}
bare_once() {
	local t0
	t0=$(now)
	for ph in pre-install install post-install finalise; do
		chroot "$TREE" /bin/sh -c "for i in \$(seq -w 1 $N); do /bin/sh -c ':'; done"
	done
	awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.6f\n", b - a}'
}
# Ours and the bare loop alternate, so that the load of a shared host
# weighs on both alike; the overhead is the median of the paired
# differences.
log "ours and the bare chroot loop, alternating: $RUNS runs each"
ours_once >/dev/null
bare_once >/dev/null
for _ in $(seq "$RUNS"); do
	o=$(ours_once)
	b=$(bare_once)
	echo "$o" >>"$WORK/ours"
	echo "$b" >>"$WORK/bare"
	awk -v o="$o" -v b="$b" 'BEGIN {printf "%.6f\n", o - b}' >>"$WORK/diff"
done
log "DIB (element-info, generate_hooks, run_d_in_target x4): $DIB_RUNS runs"
dib_once >/dev/null
for _ in $(seq "$DIB_RUNS"); do dib_once; done >"$WORK/dib"

ours=$(median <"$WORK/ours")
dib=$(median <"$WORK/dib")
bare=$(median <"$WORK/bare")
diff=$(median <"$WORK/diff")
awk -v o="$ours" -v d="$dib" -v b="$bare" -v ov="$diff" -v n="$N" '
function t(s) { return s < 1 ? sprintf("%.0f ms", s * 1000) : sprintf("%.2f s", s) }
BEGIN {
	printf "imagefactory-elements bench: %d elements, %d empty hooks, medians (runs: see samples)\n", n, n * 4
	printf "  ours (Prepare + Provision)          %s\n", t(o)
	printf "  DIB (element-info + hooks + 4 x run_d_in_target)  %s   ratio DIB/ours %.2fx\n", t(d), d / o
	printf "  bare chroot loop                    %s   ratio bare/ours %.2fx\n", t(b), b / o
	printf "  overhead (median of paired ours - bare)  %s   target < 2 s: %s\n", t(ov), (ov < 2 ? "PASS" : "MISS")
}' | tee "$OUT/elements.txt"
{
	printf '  samples ours: %s\n' "$(tr '\n' ' ' <"$WORK/ours")"
	printf '  samples DIB:  %s\n' "$(tr '\n' ' ' <"$WORK/dib")"
	printf '  samples bare: %s\n' "$(tr '\n' ' ' <"$WORK/bare")"
	printf '  samples diff: %s\n' "$(tr '\n' ' ' <"$WORK/diff")"
} | tee -a "$OUT/elements.txt"
