// Command gendocs writes the table of scrub operations and the per-family
// section, generated from internal/scrub, into the docs partials (run by
// go generate).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

func main() {
	dir := filepath.Join("..", "..", "docs-partials", "post-processor", "scrub")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for name, content := range map[string]string{"operations.mdx": OperationsPartial(), "families.mdx": FamiliesPartial()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// OperationsPartial is the partial's content.
func OperationsPartial() string {
	return "<!-- Generated from internal/scrub by post-processor/scrub/gendocs; DO NOT EDIT -->\n\n" + scrub.DocsTable()
}

// FamiliesPartial is the per-family section's content.
func FamiliesPartial() string {
	return "<!-- Generated from internal/scrub by post-processor/scrub/gendocs; DO NOT EDIT -->\n\n" + scrub.FamiliesDocs()
}
