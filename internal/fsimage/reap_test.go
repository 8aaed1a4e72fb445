package fsimage

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestReapAfterKill re-execs this test binary as a build that dies.
const childEnv = "IMAGEFACTORY_FSIMAGE_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := mountAndWait(); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		time.Sleep(time.Hour) // until the parent kills us
	}
	os.Exit(m.Run())
}

// mountAndWait mounts IF_IMAGE on IF_DIR through a journal in IF_STATE,
// as a build does, and says "ready".
func mountAndWait() error {
	j, err := cleanup.Open(os.Getenv("IF_STATE"), "fsimage child")
	if err != nil {
		return err
	}
	info, err := Probe(os.Getenv("IF_IMAGE"))
	if err != nil {
		return err
	}
	if _, err := Mount(j, os.Getenv("IF_IMAGE"), info, os.Getenv("IF_DIR")); err != nil {
		return err
	}
	fmt.Println("ready")
	return nil
}

// TestReapAfterKill: a build killed (SIGKILL) with the filesystem image
// mounted leaves its read-only loop device, mount and mount point; the
// next build's reap releases them all, and the image is unchanged.
func TestReapAfterKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mount)")
	}
	img := mkfs(t, "ext4", 16, "-q")
	sum := fixture.Sha256(t, img)
	state, work := t.TempDir(), t.TempDir()
	dir := filepath.Join(work, "source")
	snap := fixture.LeakSnapshot()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "IF_STATE="+state, "IF_IMAGE="+img, "IF_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("the child did not mount the image: %q", line)
	}
	if ok, err := cleanup.IsMountPoint(dir); err != nil || !ok {
		t.Fatalf("the killed child left no mount on %s (%v): the test shows nothing", dir, err)
	}

	rep, err := cleanup.Reap(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reaped: %v", rep.Released)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the mount point %s is still there: %v", dir, err)
	}
	snap.AssertNoLeaksIn(t, filepath.Dir(img), work)
	if fixture.Sha256(t, img) != sum {
		t.Error("the image changed")
	}
}
