package sbom

import (
	"os"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

func TestMain(m *testing.M) {
	// The test binary stands in for the plugin's: it dispatches the child.
	if len(os.Args) > 1 && os.Args[1] == RPMChildCommand {
		if os.Getenv(childPanicEnv) != "" {
			// As go-rpmdb's reading goroutine would on a hostile page.
			done := make(chan struct{})
			go func() { panic(childPanicMessage) }()
			<-done
		}
		os.Exit(RunRPMChild(os.Args[2:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	fixture.RemoveCache()
	os.Exit(code)
}

// childPanicEnv makes the rpm child crash as a library goroutine would.
const (
	childPanicEnv     = "IMAGEFACTORY_SBOM_TEST_CHILD_PANIC"
	childPanicMessage = "runtime error: index out of range [7] with length 4"
)
