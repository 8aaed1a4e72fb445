package scrub

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// TestOperationsDocsCurrent fails when the committed operations table
// drifts from the code (run go generate ./... to refresh it).
func TestOperationsDocsCurrent(t *testing.T) {
	got, err := os.ReadFile(filepath.Join("..", "..", "docs-partials", "post-processor", "scrub", "operations.mdx"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(got), scrub.DocsTable()) {
		t.Error("docs-partials/post-processor/scrub/operations.mdx is stale: run go generate ./...")
	}
}
