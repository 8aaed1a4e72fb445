// Command gendocs writes the table of scrub operations, generated from
// internal/scrub, into the docs partials (run by go generate).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

func main() {
	out := filepath.Join("..", "..", "docs-partials", "post-processor", "scrub", "operations.mdx")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(out, []byte(OperationsPartial()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// OperationsPartial is the partial's content.
func OperationsPartial() string {
	return "<!-- Generated from internal/scrub by post-processor/scrub/gendocs; DO NOT EDIT -->\n\n" + scrub.DocsTable()
}
