#!/usr/bin/env bash
# Checks that the Go on PATH (or $GO) is at least the version go.mod asks
# for, before make's first `go build` fails on a go.mod line. Prints what to
# do when it is not. Exit 0: good; 1: missing or too old.
#
# Debian 12's golang-go is Go 1.19, older than go.mod's; bookworm-backports
# has golang-1.23-go, a Go >= 1.21 that fetches a newer toolchain through
# the Go module proxy (golang.org/toolchain) when go.mod or GOTOOLCHAIN
# asks for one (https://go.dev/doc/toolchain); GOTOOLCHAIN=go1.26.8 names
# the release, the one this project is tested with (TestSetupOnDebian12).
set -euo pipefail
cd "$(dirname "$0")/.."

go=${GO:-go}
want=$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' go.mod)
want_minor=$(cut -d. -f2 <<<"$want")
toolchain=go1.26.8 # a release of go.mod's Go, served by the module proxy

advice() {
	cat >&2 <<MSG
This project needs Go $want or newer (go.mod says "go $want").

On Debian 12, whose golang-go is Go 1.19, as root:
  1. add bookworm-backports to apt's sources, beside the bookworm line
     (same URI, suite bookworm-backports, component main), then
       apt-get update && apt-get install -y -t bookworm-backports golang-1.23-go
  2. let that Go fetch Go $want through the Go module proxy and use it:
       export PATH=/usr/lib/go-1.23/bin:\$PATH GOTOOLCHAIN=$toolchain
  3. run make again (scripts/check-go.sh checks it).
Or install Go $want or newer from Go's own release archives, on a host that
reaches them, and put its bin/ first on PATH.
MSG
}

if ! command -v "$go" >/dev/null; then
	echo "Go not found: no '$go' on PATH." >&2
	advice
	exit 1
fi
# `go env GOVERSION` is the toolchain that runs, after GOTOOLCHAIN's switch;
# Go before 1.16 has no GOVERSION: fall back to `go version`.
have=$("$go" env GOVERSION 2>/dev/null || true)
[[ $have == go* ]] || have=$("$go" version 2>/dev/null | awk '{print $3}' || true)
have_minor=$(sed -n 's/^go1\.\([0-9]*\).*/\1/p' <<<"$have")
if [[ -z $have_minor ]] || ((have_minor < want_minor)); then
	echo "Go too old: '$go' is ${have:-of unknown version} ($(command -v "$go"))." >&2
	advice
	exit 1
fi
