#!/usr/bin/env bash
# Benchmarks our chroot session and working copy against what a person
# would do by hand and against the usual tools, in one run, and prints a
# table (also written to bench/out/results.txt). See bench/README.md.
#
# Needs root (loop devices, mounts, chroot, drop_caches). A MISS never fails
# the run; an error does. Whatever it attaches or mounts is released on
# exit, error, Ctrl-C or SIGTERM (trap EXIT), and checked for at the end.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
export LC_ALL=C # awk and sort must read and print "0.123"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CACHE=$BENCH_DIR/cache # gitignored; holds the fixture between runs
OUT=$BENCH_DIR/out     # gitignored; results and the Go helper
WORK=$CACHE/work       # this run's scratch: copies, mount points, btrfs image
STATE=/run/imagefactory-bench # sessionbench's cleanup journals (tmpfs, like the builder's)
SB=$OUT/sessionbench

# The fixture's recipe; change the version when the recipe changes, and the
# next run builds a new one instead of reusing the cached file.
FIXTURE_VERSION=v1-4GiB-mbr-ext4-1GiB-urandom
FIXTURE=$CACHE/fixture-$FIXTURE_VERSION.raw
DISK_SIZE=$((4 << 30))
PART_START=$((1 << 20))                # 1 MiB, sector 2048
PART_SIZE=$((DISK_SIZE - PART_START))  # to the end of the disk
DATA_FILES=16 DATA_FILE_MIB=64         # 1 GiB of random data

# Runs per measure. Cold-cache copies on this kind of host spread from 0.6
# to 2 s for the same tool, so the ext4 copies take 5 rounds, not 3.
N_SESSION=${BENCH_SESSION_RUNS:-10}
N_COPY=${BENCH_COPY_RUNS:-9} # cold copies here vary 0.6-2 s: 5 samples cannot settle a median
N_DD=${BENCH_DD_RUNS:-1} # dd writes all 4 GiB, about 20 s: one run by default
N_REFLINK=${BENCH_REFLINK_RUNS:-10}
N_TREE=${BENCH_TREE_RUNS:-3} # root tree to bootable disk: a few seconds each
N_SELINUX=${BENCH_SELINUX_RUNS:-3} # SELinux relabel: a full setfiles takes 3-6 s here
N_SBOM=${BENCH_SBOM_RUNS:-5} # SBOM of the example image: tens of ms each

log() { printf '%s bench: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for n in "$N_SESSION" "$N_COPY" "$N_DD" "$N_REFLINK" "$N_TREE" "$N_SELINUX" "$N_SBOM"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_*_RUNS must be whole numbers >= 1, not \"$n\""
done
((EUID == 0)) || die "needs root (loop devices, mount, chroot, /proc/sys/vm/drop_caches)"
for t in go setfiles sfdisk mkfs.ext4 mkfs.btrfs blkid losetup findmnt mount umount chroot busybox qemu-img dd cp cmp column flock; do
	command -v "$t" >/dev/null || die "$t not found (make deps installs the Debian packages)"
done
mkdir -p "$CACHE" "$OUT"
exec 9>"$CACHE/.lock"
flock -n 9 || die "another bench/run.sh holds $CACHE/.lock"

# --- cleanup -----------------------------------------------------------------

CHILD= # the background command being waited for, if any

# cleanup releases everything this script (or a killed earlier run) holds:
# the Go helper, its journals, every mount under $CACHE (newest first),
# every loop device backed by a file under $CACHE, the scratch directory.
# Safe to run at any point, and more than once.
cleanup() {
	local - # the set +e below ends with the function
	set +e
	IN_CLEANUP=1
	if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
		kill -TERM "$CHILD" 2>/dev/null
		wait "$CHILD" 2>/dev/null
	fi
	CHILD=
	[[ -x $SB ]] && "$SB" reap -state "$STATE" >&2
	local t dev
	# The mount table lists mounts in mount order: undo it backwards.
	findmnt -rn -o TARGET | tac | awk -v p="$CACHE/" 'index($0, p) == 1' | while read -r t; do
		umount "$t" 2>/dev/null || umount -l "$t" || log "cannot unmount $t"
	done
	losetup -l -n -O NAME,BACK-FILE | awk -v p="$CACHE/" 'index($2, p) == 1 {print $1}' | while read -r dev; do
		losetup -d "$dev" || log "cannot detach $dev"
	done
	rm -rf "$WORK"
	rmdir "$STATE" 2>/dev/null
	IN_CLEANUP=
	return 0
}
IN_CLEANUP= FAILED=
set -E # the ERR trap in functions too
trap 'rc=$?; [[ -n $IN_CLEANUP ]] || log "error: ${FAILED:-line $LINENO: $BASH_COMMAND (exit $rc)}; cleaning up"' ERR
trap cleanup EXIT
trap 'log "interrupted; cleaning up"; exit 130' INT
trap 'log "terminated; cleaning up"; exit 143' TERM

# leaks lists what cleanup should have released.
leaks() {
	findmnt -rn -o TARGET | awk -v p="$CACHE/" 'index($0, p) == 1 {print "mount: " $0}'
	losetup -l -n -O NAME,BACK-FILE | awk -v p="$CACHE/" 'index($2, p) == 1 {print "loop: " $0}'
	local j
	for j in "$STATE"/*.journal; do
		[[ -e $j ]] && echo "journal: $j"
	done
	return 0
}

cleanup # what a kill -9'd earlier run left
mkdir -p "$WORK" "$WORK/samples"

# run runs "$@" in the background and waits, so that a signal to this script
# is acted on at once rather than when a long command ends (bash delays traps
# until a foreground command returns); cleanup stops the command.
run() {
	"$@" &
	CHILD=$!
	local rc=0
	wait "$CHILD" || rc=$?
	CHILD=
	((rc == 0)) || FAILED="$* (exit $rc)"
	return "$rc"
}

# timeit runs "$@" and sets T to its wall time in seconds. $EPOCHREALTIME
# costs no fork; the command's own start-up is included, as for any user.
T=
timeit() {
	local t0=$EPOCHREALTIME t1
	run "$@"
	t1=$EPOCHREALTIME
	T=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')
}

CACHES_DROPPED=yes
drop_caches() {
	run sync
	if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
		[[ $CACHES_DROPPED == no ]] || log "warning: cannot write /proc/sys/vm/drop_caches; copy timings are warm-cache"
		CACHES_DROPPED=no
	fi
}

sample() { echo "$2" >>"$WORK/samples/$1"; }

# --- the fixture ---------------------------------------------------------------

# make_fixture writes a 4 GiB raw disk: MBR, one ext4 partition labelled
# cloudimg-rootfs from 1 MiB to the end, holding a busybox-static root and
# 1 GiB of random (incompressible) files; the rest is holes.
make_fixture() {
	local tree=$WORK/tree img=$WORK/fixture.tmp i
	log "building the fixture $FIXTURE (about 30 s; cached for later runs)"
	mkdir -p "$tree"/{bin,etc,proc,sys,dev,run,tmp,root,data}
	cp /bin/busybox "$tree/bin/busybox"
	for i in $(busybox --list); do
		[[ $i == busybox ]] || ln -s busybox "$tree/bin/$i"
	done
	ln -s bin "$tree/sbin"
	echo 'LABEL=cloudimg-rootfs / ext4 defaults 0 1' >"$tree/etc/fstab"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$tree/etc/passwd"
	for ((i = 0; i < DATA_FILES; i++)); do
		run head -c "${DATA_FILE_MIB}M" /dev/urandom >"$tree/data/blob-$i"
	done
	truncate -s "$DISK_SIZE" "$img"
	# In the foreground: a background command's stdin would be /dev/null.
	sfdisk -q --label dos "$img" <<<"start=$((PART_START / 512)), size=$((PART_SIZE / 512)), type=83"
	run mkfs.ext4 -q -F -b 4096 -L cloudimg-rootfs -E "offset=$PART_START" -d "$tree" "$img" "$((PART_SIZE / 1024))k"
	[[ $(blkid -p -O "$PART_START" -o value -s LABEL "$img") == cloudimg-rootfs ]] ||
		die "the fixture's partition holds no filesystem labelled cloudimg-rootfs"
	rm -rf "$tree"
	rm -f "$CACHE"/fixture-*.raw # older recipes
	mv "$img" "$FIXTURE"
}

BENCH_START=$EPOCHREALTIME
log "building the Go helper"
run go -C "$ROOT" build -o "$SB" ./bench/sessionbench

if [[ -f $FIXTURE ]]; then
	log "reusing the cached fixture $FIXTURE"
else
	make_fixture
fi
FIXTURE_DATA=$(($(du -B1 "$FIXTURE" | cut -f1) >> 20))

# --- working copy on ext4: ours, cp, dd, qemu-img ---------------------------------

# Every timing starts with sync and dropped caches, and its output is
# deleted right after, before the next sync: no output is ever written
# back, so no tool pays for another's writeback or for the discards (this
# host mounts / with discard) of deleting a file that reached the disk.
# Copies are not fsync'd (nor are they by the builder): the time is reading
# the source plus filling the page cache. Rounds rotate the order of the
# tools so that drift hits them alike; dd (4 GiB written) runs last.
copy_ours() {
	run "$SB" copy -src "$1" -dst "$2" >"$WORK/out"
	local secs method
	read -r secs method <"$WORK/out"
	[[ $method == "$3" ]] || die "diskimage.Copy to $2 used $method, want $3"
	T=$secs
}

copy_with() {
	local dst=$WORK/$1.raw
	drop_caches
	case $1 in
	ours) copy_ours "$FIXTURE" "$dst" sparse-copy ;;
	cp) timeit cp --sparse=auto "$FIXTURE" "$dst" ;;
	qemu) timeit qemu-img convert -f raw -O raw "$FIXTURE" "$dst" ;;
	dd) timeit dd if="$FIXTURE" of="$dst" bs=4M status=none ;;
	esac
	rm -f "$dst"
	sample "copy-$1" "$T"
}

log "working copy on $(findmnt -n -o FSTYPE -T "$CACHE"): $N_COPY rounds (dd: $N_DD), caches dropped before each copy"
tools=(ours cp qemu)
for ((r = 0; r < N_COPY; r++)); do
	for ((i = 0; i < ${#tools[@]}; i++)); do
		copy_with "${tools[(i + r) % ${#tools[@]}]}"
	done
	log "  round $((r + 1)): ours $(tail -1 "$WORK/samples/copy-ours") s, cp $(tail -1 "$WORK/samples/copy-cp") s, qemu-img $(tail -1 "$WORK/samples/copy-qemu") s"
done
for ((r = 0; r < N_DD; r++)); do
	copy_with dd
	log "  dd: $(tail -1 "$WORK/samples/copy-dd") s"
done

# The session works on a copy of ours (untimed), not on the cached fixture:
# a read-write mount changes the filesystem. A fast copy is worth nothing
# if it is wrong: compare it.
DISK=$WORK/session.raw
copy_ours "$FIXTURE" "$DISK" sparse-copy
run cmp "$FIXTURE" "$DISK" || die "diskimage.Copy's copy $DISK differs from the fixture"

# --- chroot session: ours vs by hand ----------------------------------------------

log "chroot session, ours: 1 warm-up + $N_SESSION runs"
run "$SB" session -disk "$DISK" -mount "$WORK/mnt-ours" -state "$STATE" -n "$N_SESSION" >>"$WORK/samples/session-ours"
# The same with the command in the chroot's sandbox, as the builder runs
# it (issue 18): init started in new mount, PID and IPC namespaces, the
# command through nsenter, the sandbox stopped at Close.
log "chroot session in the sandbox, ours: 1 warm-up + $N_SESSION runs"
run "$SB" session -disk "$DISK" -mount "$WORK/mnt-ours" -state "$STATE" -n "$N_SESSION" -sandbox >>"$WORK/samples/session-sandbox"

# hand_cycle is the same job done by hand: what the builder replaces.
HAND=$WORK/mnt-hand
hand_cycle() {
	local dev
	dev=$(losetup -o "$PART_START" --sizelimit "$PART_SIZE" -f --show "$DISK")
	mount -t ext4 "$dev" "$HAND"
	mount -t proc proc "$HAND/proc"
	mount -t sysfs sysfs "$HAND/sys"
	mount --bind /dev "$HAND/dev"
	mount --bind /dev/pts "$HAND/dev/pts"
	mount -t tmpfs -o mode=0755 tmpfs "$HAND/run"
	chroot "$HAND" /bin/true
	umount "$HAND/run" "$HAND/dev/pts" "$HAND/dev" "$HAND/sys" "$HAND/proc" "$HAND"
	losetup -d "$dev"
}
log "chroot session, by hand: 1 warm-up + $N_SESSION runs"
mkdir -p "$HAND"
hand_cycle
for ((r = 1; r <= N_SESSION; r++)); do
	t0=$EPOCHREALTIME
	hand_cycle
	t1=$EPOCHREALTIME
	sample session-hand "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')"
done

# --- chroot session on the LVM layout (VG rhel, five LVs) --------------------------

# The RHEL/CIS-like disk is made by the test fixture (internal/fixture/lvm.go).
log "chroot session, LVM layout (ESP, /boot xfs, VG rhel with 5 LVs): 1 warm-up + $N_SESSION runs"
run env IMAGEFACTORY_BENCH_LVM_DISK="$WORK/lvm.raw" go -C "$ROOT" test -count=1 -run '^TestBenchLVMDisk$' ./internal/fixture
run "$SB" session -disk "$WORK/lvm.raw" -mount "$WORK/mnt-lvm" -state "$STATE" -n "$N_SESSION" -root-lv rhel/root >>"$WORK/samples/session-lvm"
rm -f "$WORK/lvm.raw"

# --- chroot session on the btrfs layout (Fedora: subvolumes root and home) ---------

# The Fedora-like disk is made by the test fixture (internal/fixture/btrfs.go):
# the root is found in subvolume root through a look at the top level.
log "chroot session, btrfs layout (ESP, /boot ext4, btrfs subvolumes root and home): 1 warm-up + $N_SESSION runs"
run env IMAGEFACTORY_BENCH_BTRFS_DISK="$WORK/btrfs.raw" go -C "$ROOT" test -count=1 -run '^TestBenchBtrfsDisk$' ./internal/fixture
run "$SB" session -disk "$WORK/btrfs.raw" -mount "$WORK/mnt-btrfs" -state "$STATE" -n "$N_SESSION" -root-subvol root >>"$WORK/samples/session-btrfs"
rm -f "$WORK/btrfs.raw"

# --- reflink on btrfs --------------------------------------------------------------

log "reflink: btrfs on a loop-mounted 6 GiB sparse file; $N_REFLINK rounds, caches dropped before each"
truncate -s 6G "$WORK/btrfs.img"
# mkfs.btrfs -q still prints a notice about its defaults: only show its
# output when it fails.
run mkfs.btrfs -q -f "$WORK/btrfs.img" >"$WORK/mkfs.log" 2>&1 || { cat "$WORK/mkfs.log" >&2; die "mkfs.btrfs failed"; }
BTRFS_DEV=$(losetup -f --show "$WORK/btrfs.img")
BTRFS=$WORK/btrfs
mkdir -p "$BTRFS"
mount -t btrfs "$BTRFS_DEV" "$BTRFS"
run cp --sparse=always "$FIXTURE" "$BTRFS/src.raw"
run sync "$BTRFS/src.raw" # fsync: the source is on disk, as a base image would be
for ((r = 1; r <= N_REFLINK; r++)); do
	drop_caches
	copy_ours "$BTRFS/src.raw" "$BTRFS/ours.raw" reflink; sample reflink-ours "$T"
	rm -f "$BTRFS/ours.raw"
	drop_caches
	timeit cp --reflink=always "$BTRFS/src.raw" "$BTRFS/cp.raw"; sample reflink-cp "$T"
	rm -f "$BTRFS/cp.raw"
done
umount "$BTRFS"
losetup -d "$BTRFS_DEV"
rm -f "$WORK/btrfs.img"

# --- root tree to bootable disk ----------------------------------------------------

# The bootable Debian 12 tree every checkout shares (scripts/debian-rootfs.sh),
# unpacked untimed; ours is internal/bootdisk (GPT, ext4, GRUB for BIOS and
# UEFI), the anchor the filesystem alone by hand as example/make-base-image.sh
# does it (sfdisk, mkfs.ext4 -d at an offset, no boot loader), same size.
log "root tree to bootable disk: $N_TREE rounds"
TB=$OUT/treebench
run go -C "$ROOT" build -o "$TB" ./bench/treebench
TARBALL=$(DEBIAN_INCLUDE_EXTRA=linux-image-amd64,cloud-init "$ROOT/scripts/debian-rootfs.sh")
TREE=$WORK/debian-tree
mkdir -p "$TREE"
run tar -C "$TREE" --numeric-owner --xattrs --xattrs-include='*' --acls -xpf "$TARBALL"
for ((r = 1; r <= N_TREE; r++)); do
	rm -f "$WORK/tree-ours.raw" "$WORK/tree-hand.raw"
	run "$TB" -tree "$TREE" -out "$WORK/tree-ours.raw" -state "$STATE" >"$WORK/out"
	read -r secs TREE_DISK TREE_ALLOC <"$WORK/out"
	sample tree-ours "$secs"
	timeit bash -c 'truncate -s "$1" "$2" && echo "start=2048, type=83" | sfdisk -q --label dos "$2" &&
		mkfs.ext4 -q -F -L cloudimg-rootfs -E offset=1048576,nodiscard -d "$3" "$2" "$((($1 - 1048576) / 1024))k"' \
		_ "$TREE_DISK" "$WORK/tree-hand.raw" "$TREE"
	sample tree-hand "$T"
	log "  round $r: ours $secs s, by hand $T s; disk $((TREE_DISK >> 20)) MiB, $((TREE_ALLOC >> 20)) MiB allocated"
done

# The builder's SBOM step on the same tree (the example image's packages):
# sbombench times internal/sbom's Read and SPDX in-process, each round in a
# fresh process with the page cache dropped first, as a build meets the
# image; the anchor is dpkg-query -W on the same database.
log "SBOM of the example image: $N_SBOM rounds"
SBB=$OUT/sbombench
run go -C "$ROOT" build -o "$SBB" ./bench/sbombench
for ((r = 1; r <= N_SBOM; r++)); do
	drop_caches
	run "$SBB" -tree "$TREE" >"$WORK/out"
	read -r secs SBOM_PKGS SBOM_KERNELS SBOM_BYTES <"$WORK/out"
	sample sbom-ours "$secs"
	timeit dpkg-query --admindir="$TREE/var/lib/dpkg" -W >/dev/null
	sample sbom-dpkg-query "$T"
	log "  round $r: ours $secs s, dpkg-query -W $T s; $SBOM_PKGS packages, $SBOM_KERNELS kernel(s), $SBOM_BYTES bytes of SPDX"
done
rm -rf "$TREE" "$WORK/tree-ours.raw" "$WORK/tree-hand.raw"

# --- SELinux relabel: what a build changed vs the whole tree -------------------------

# The Debian tree with selinux-policy-default (scripts/debian-rootfs.sh, as
# the tests' fixture), set enforcing and labelled once, untimed; each round
# writes the acceptance test's three files and relabels what changed
# (selinuxbench: both walks and the host's setfiles -r over the changed
# paths), then times a full setfiles -r of the same tree.
log "SELinux relabel: $N_SELINUX rounds"
SLB=$OUT/selinuxbench
run go -C "$ROOT" build -o "$SLB" ./bench/selinuxbench
SL_TARBALL=$(DEBIAN_INCLUDE_EXTRA=selinux-policy-default,policycoreutils "$ROOT/scripts/debian-rootfs.sh")
SL_TREE=$WORK/selinux-tree
mkdir -p "$SL_TREE"
run tar -C "$SL_TREE" --numeric-owner --xattrs --xattrs-include='*' --acls -xpf "$SL_TARBALL"
printf 'SELINUX=enforcing\nSELINUXTYPE=default\n' >"$SL_TREE/etc/selinux/config"
run setfiles -r "$SL_TREE" "$SL_TREE/etc/selinux/default/contexts/files/file_contexts" "$SL_TREE"
for ((r = 1; r <= N_SELINUX; r++)); do
	run "$SLB" -tree "$SL_TREE" >"$WORK/out"
	read -r secs walks full SL_PATHS SL_INODES <"$WORK/out"
	sample selinux-changed "$secs"
	sample selinux-full "$full"
	log "  round $r: changed paths $secs s (walks $walks s), full setfiles $full s; $SL_PATHS paths of $SL_INODES inodes"
done
rm -rf "$SL_TREE"

# --- the table -----------------------------------------------------------------------

median() { sort -n "$WORK/samples/$1" | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
count() { wc -l <"$WORK/samples/$1"; }

# row MEASURE OURS ANCHOR_NAME ANCHOR KIND LIMIT TARGET_TEXT
# KIND "below": PASS when ours < LIMIT seconds; "ratio": PASS when
# anchor/ours >= LIMIT; "info": no target.
row() {
	awk -v m="$1" -v o="$2" -v an="$3" -v a="$4" -v kind="$5" -v lim="$6" -v tt="$7" '
	function t(s) { return s < 1 ? sprintf("%.1f ms", s * 1000) : sprintf("%.2f s", s) }
	BEGIN {
		ratio = a / o
		res = "-"
		if (kind == "below") res = (o < lim) ? "PASS" : "MISS"
		if (kind == "ratio") res = (ratio >= lim) ? "PASS" : "MISS"
		printf "%s|%s|%s: %s|%.2fx|%s|%s\n", m, t(o), an, t(a), ratio, tt, res
	}'
}

{
	echo "measure|ours|anchor|ratio (anchor/ours)|target|result"
	row "chroot session: open + chroot /bin/true + close (median of $(count session-ours))" \
		"$(median session-ours)" "by hand in bash" "$(median session-hand)" below 1 "ours < 1 s"
	row "chroot session in the sandbox: namespaces + nsenter /bin/true (median of $(count session-sandbox))" \
		"$(median session-sandbox)" "plain chroot, ours" "$(median session-ours)" below 1 "ours < 1 s"
	row "chroot session, LVM: 5 LVs + /boot mounted (median of $(count session-lvm))" \
		"$(median session-lvm)" "plain layout, ours" "$(median session-ours)" below 1 "ours < 1 s"
	row "chroot session, btrfs: root and /home subvolumes + /boot mounted (median of $(count session-btrfs))" \
		"$(median session-btrfs)" "plain layout, ours" "$(median session-ours)" below 1 "ours < 1 s"
	row "working copy, ext4 (median of $(count copy-ours))" \
		"$(median copy-ours)" "cp --sparse=auto" "$(median copy-cp)" ratio 1 "no slower than cp (>= 1.00x)"
	row "working copy, ext4 vs dd (dd: $(count copy-dd) run)" \
		"$(median copy-ours)" "dd bs=4M" "$(median copy-dd)" ratio 3 ">= 3x faster than dd"
	row "working copy, ext4 vs qemu-img (median of $(count copy-qemu))" \
		"$(median copy-ours)" "qemu-img convert -O raw" "$(median copy-qemu)" info 0 "reference"
	row "working copy, btrfs reflink (median of $(count reflink-ours))" \
		"$(median reflink-ours)" "cp --reflink=always" "$(median reflink-cp)" below 0.05 "ours < 50 ms"
	row "root tree to bootable disk, $((TREE_DISK >> 20)) MiB GPT+GRUB (median of $(count tree-ours))" \
		"$(median tree-ours)" "sfdisk + mkfs.ext4 -d, no boot loader" "$(median tree-hand)" info 0 "reference"
	row "SELinux relabel of $SL_PATHS changed paths of $SL_INODES inodes, walks included (median of $(count selinux-changed))" \
		"$(median selinux-changed)" "full setfiles -r of the tree" "$(median selinux-full)" ratio 5 ">= 5x faster than a full relabel"
	row "SBOM of the example image: Read + SPDX, $SBOM_PKGS packages, cold cache (median of $(count sbom-ours))" \
		"$(median sbom-ours)" "dpkg-query -W, warm" "$(median sbom-dpkg-query)" below 1 "< 1 s"
} | column -t -s '|' -o ' | ' >"$WORK/table"

ELAPSED=$(awk -v a="$BENCH_START" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.0f", b - a}')
{
	echo "imagefactory bench, $(date -u +%FT%TZ), $(uname -r), $(nproc) cores, ${ELAPSED} s"
	echo "fixture: $FIXTURE ($((DISK_SIZE >> 30)) GiB raw, MBR, ext4 cloudimg-rootfs, ${FIXTURE_DATA} MiB allocated)"
	if [[ $CACHES_DROPPED == yes ]]; then
		echo "page cache: sync; echo 3 > /proc/sys/vm/drop_caches before every copy timing (ext4 and reflink)"
	else
		echo "page cache: NOT dropped (/proc/sys/vm/drop_caches not writable): copy timings are warm"
	fi
	echo "session: warm cache, one untimed warm-up each; ours includes journal open/close (fsync'd records)"
	echo "ours is timed in-process; anchors by the shell, their process start included"
	echo
	cat "$WORK/table"
	echo
	echo "samples (seconds):"
	for f in session-ours session-sandbox session-hand session-lvm session-btrfs copy-ours copy-cp copy-dd copy-qemu reflink-ours reflink-cp tree-ours tree-hand selinux-changed selinux-full sbom-ours sbom-dpkg-query; do
		[[ -f $WORK/samples/$f ]] && printf '  %-13s %s\n' "$f" "$(tr '\n' ' ' <"$WORK/samples/$f")"
	done
} >"$OUT/results.txt.tmp"
mv "$OUT/results.txt.tmp" "$OUT/results.txt"

cleanup
trap - EXIT
if [[ -n $(leaks) ]]; then
	leaks >&2
	die "left behind after the run (a bug)"
fi
echo
cat "$OUT/results.txt"
echo
echo "written to $OUT/results.txt; nothing left mounted or attached"

# Scrub + sparsify against virt-sysprep + virt-sparsify (its own fixture,
# table and bench/out/scrub-sparsify.txt).
"$BENCH_DIR/scrub-sparsify.sh"

# A compressed base image to a working disk against xz/zstd -dc piped to
# cp --sparse=always (its own fixture and bench/out/decompress.txt):
# BENCH_DECOMPRESS=0 skips it.
if [[ ${BENCH_DECOMPRESS:-1} == 1 ]]; then
	echo
	"$BENCH_DIR/decompress.sh" | tee -a "$OUT/results.txt"
fi

# packer-plugin-qemu against our qemu and chroot strategies, whole builds
# (minutes under TCG): BENCH_QEMU=0 skips it.
if [[ ${BENCH_QEMU:-1} == 1 ]]; then
	echo
	"$BENCH_DIR/qemu-vs-chroot.sh" | tee -a "$OUT/results.txt"
fi

# Many builds, one runner: 1, 2 and 4 concurrent chroot builds on one base
# image, builds per minute (a few minutes): BENCH_CONCURRENT=0 skips it.
if [[ ${BENCH_CONCURRENT:-1} == 1 ]]; then
	echo
	"$BENCH_DIR/concurrent.sh" | tee -a "$OUT/results.txt"
fi

# arm64: the chroot under qemu-user against the qemu strategy under
# qemu-system-aarch64 (TCG) and the amd64 chroot, whole builds (minutes):
# BENCH_ARM64=0 skips it.
if [[ ${BENCH_ARM64:-1} == 1 ]]; then
	echo
	"$BENCH_DIR/arm64.sh" | tee -a "$OUT/results.txt"
fi

# The reproducible mode's cost (issue 16): the same tree-made build with
# scrub and sparsify, with and without SOURCE_DATE_EPOCH (a few minutes):
# BENCH_REPRO=0 skips it.
if [[ ${BENCH_REPRO:-1} == 1 ]]; then
	echo
	"$BENCH_DIR/repro.sh" | tee -a "$OUT/results.txt"
fi

# Glance import through fetchdisk's server against python3 -m http.server.
"$BENCH_DIR/fetchdisk.sh" "$FIXTURE" # Glance import through fetchdisk's server vs python3 -m http.server
"$BENCH_DIR/elements.sh" # imagefactory-elements: overhead for 20 elements beside DIB and a bare chroot loop
