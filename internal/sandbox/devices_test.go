package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
)

// testCgroup is a sandbox cgroup allowing allow, removed at the end.
func testCgroup(t *testing.T, allow []Device) *Cgroup {
	t.Helper()
	dir, err := cleanup.CgroupDir(fmt.Sprintf("%d-%s", os.Getpid(), t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	cg, err := NewCgroup(dir, allow)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cg.Close()
		if _, err := cleanup.RemoveCgroup(dir); err != nil {
			t.Error(err)
		}
	})
	return cg
}

// TestDeviceCgroup: a process started in a sandbox cgroup opens and mknods
// the listed devices only, whatever node names them; RemoveCgroup kills
// what is left in it and leaves no cgroup.
func TestDeviceCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("cgroups and BPF need root")
	}
	// The host's root disk, from mountinfo's major:minor of /.
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	disk := Device{Block: true, Major: unix.Major(st.Dev), Minor: unix.Minor(st.Dev)}
	loop := Device{Block: true, Major: 7, Minor: 1000}
	cg := testCgroup(t, AllowedDevices([]Node{{Name: "loop1000", Block: true, Major: 7, Minor: 1000}}))
	dir := cg.Dir()
	nodes := t.TempDir()
	// in runs script with the host's sh in the cgroup.
	in := func(script string) (string, error) {
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Dir = nodes
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.FD()}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct {
		dev   Device
		name  string
		allow bool
	}{
		{Device{Major: 1, Minor: 3}, "null", true},
		{Device{Major: 1, Minor: 9}, "urandom", true},
		{Device{Major: 5, Minor: 2}, "ptmx", true},
		{loop, "the build's loop device", true},
		{Device{Major: 1, Minor: 1}, "mem", false},
		{Device{Major: 5, Minor: 1}, "console", false},
		{Device{Major: 10, Minor: 237}, "loop-control", false},
		{Device{Block: true, Major: 7, Minor: 0}, "another loop device", false},
		{disk, "the host's root disk", false},
	} {
		node := fmt.Sprintf("node-%d-%d-%d", map[bool]int{true: 1}[tc.dev.Block], tc.dev.Major, tc.dev.Minor)
		t.Run(tc.name, func(t *testing.T) {
			typ := "c"
			if tc.dev.Block {
				typ = "b"
			}
			out, err := in(fmt.Sprintf("mknod %s %s %d %d", node, typ, tc.dev.Major, tc.dev.Minor))
			if (err == nil) != tc.allow {
				t.Fatalf("mknod %s (%s) in the cgroup: %v %s; want allowed %v", tc.dev, tc.name, err, out, tc.allow)
			}
			if !tc.allow {
				// Made outside, opened inside: the open is refused too.
				if err := unix.Mknod(filepath.Join(nodes, node), uint32(map[bool]int{true: unix.S_IFBLK, false: unix.S_IFCHR}[tc.dev.Block])|0o600, int(unix.Mkdev(tc.dev.Major, tc.dev.Minor))); err != nil {
					t.Fatal(err)
				}
				out, err := in("exec 3<" + node)
				if err == nil || !strings.Contains(out, "not permitted") {
					t.Errorf("opening %s (%s) in the cgroup: %v %q; want EPERM", tc.dev, tc.name, err, out)
				}
			}
		})
	}
	t.Run("remove kills what is left", func(t *testing.T) {
		cmd := exec.Command("sleep", "1000")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.FD()}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		killed, err := cleanup.RemoveCgroup(dir)
		if err != nil || killed != 1 {
			t.Fatalf("RemoveCgroup: killed %d, %v; want 1, nil", killed, err)
		}
		if err := <-done; err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("the sleep in the cgroup: %v, want killed", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cgroup %s is still there: %v", dir, err)
		}
		if n, err := cleanup.RemoveCgroup(dir); n != 0 || err != nil {
			t.Errorf("a second RemoveCgroup: %d, %v", n, err)
		}
	})
}
