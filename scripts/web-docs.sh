#!/usr/bin/env bash
# Renders docs/ (with the packer-sdc partials) into .web-docs/, the layout
# the Packer integrations registry reads.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go tool packer-sdc renderdocs -src docs -partials docs-partials/ -dst "$tmp/"
mkdir -p .web-docs/components/builder/imagefactory
cp "$tmp/README.md" .web-docs/README.md
# The registry takes the page without its front matter.
awk 'BEGIN{fm=0} NR==1&&/^---$/{fm=1;next} fm&&/^---$/{fm=0;next} !fm' \
	"$tmp/builders/imagefactory.mdx" > .web-docs/components/builder/imagefactory/README.md
