#!/usr/bin/env bash
# Runs `packer-sdc struct-markdown` for $GOFILE (set by go generate).
# packer-sdc finds the project root by walking up to a directory named
# packer-plugin-*, and loops forever at / when there is none (a clone under
# any other name). Run it through a symlink with the expected name.
set -euo pipefail
pkg=$(pwd)
root=$(git -C "$pkg" rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'rm -f "$tmp/packer-plugin-imagefactory"; rmdir "$tmp"' EXIT
ln -s "$root" "$tmp/packer-plugin-imagefactory"
cd "$tmp/packer-plugin-imagefactory/${pkg#"$root"/}"
go tool packer-sdc struct-markdown
