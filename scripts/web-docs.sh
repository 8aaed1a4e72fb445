#!/usr/bin/env bash
# Renders docs/ (with the packer-sdc partials) into .web-docs/, the layout
# the Packer integrations registry reads.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go tool packer-sdc renderdocs -src docs -partials docs-partials/ -dst "$tmp/"
cp "$tmp/README.md" .web-docs/README.md
# page SOURCE DESTINATION: the registry takes a page without its front matter.
page() {
	mkdir -p "$(dirname "$2")"
	awk 'BEGIN{fm=0} NR==1&&/^---$/{fm=1;next} fm&&/^---$/{fm=0;next} !fm' "$1" >"$2"
}
page "$tmp/builders/imagefactory.mdx" .web-docs/components/builder/imagefactory/README.md
page "$tmp/post-processors/imagefactory-sparsify.mdx" .web-docs/components/post-processor/sparsify/README.md
page "$tmp/post-processors/imagefactory-scrub.mdx" .web-docs/components/post-processor/scrub/README.md
page "$tmp/post-processors/imagefactory-fetchdisk.mdx" .web-docs/components/post-processor/fetchdisk/README.md
page "$tmp/post-processors/imagefactory-boottest.mdx" .web-docs/components/post-processor/boottest/README.md
page "$tmp/provisioners/imagefactory-elements.mdx" .web-docs/components/provisioner/elements/README.md
