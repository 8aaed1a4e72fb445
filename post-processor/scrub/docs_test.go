package scrub

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// TestOperationsDocsCurrent fails when a committed partial generated from
// internal/scrub (the operations table, the per-family section) drifts
// from the code (run go generate ./... to refresh them).
func TestOperationsDocsCurrent(t *testing.T) {
	for name, want := range map[string]string{"operations.mdx": scrub.DocsTable(), "families.mdx": scrub.FamiliesDocs()} {
		got, err := os.ReadFile(filepath.Join("..", "..", "docs-partials", "post-processor", "scrub", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(got), want) {
			t.Errorf("docs-partials/post-processor/scrub/%s is stale: run go generate ./...", name)
		}
	}
}
