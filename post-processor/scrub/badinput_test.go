package scrub

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestBadInputs: each gives one clear error and leaves the input as it was.
func TestBadInputs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	cases := []struct {
		name string
		disk func(t *testing.T) string
		want string
	}{
		{"no-linux-root", func(t *testing.T) string { return fixture.NoRoot(t) }, "no root filesystem found"},
		{"not-a-disk", func(t *testing.T) string { return fixture.NotADisk(t) }, "is not a disk image"},
		{"read-only", func(t *testing.T) string {
			d := fixture.Disk(t, fixture.DiskOptions{})
			if err := os.Chmod(d, 0o444); err != nil {
				t.Fatal(err)
			}
			return d
		}, "read-only"},
		{"qcow2-missing-backing-file", func(t *testing.T) string { return fixture.QCOW2MissingBacking(t) }, "base.qcow2"},
		{"no-disk-in-artifact", func(t *testing.T) string { return "" }, "no raw or qcow2 disk image"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := fixture.LeakSnapshot()
			disk := c.disk(t)
			var files []string
			var sum string
			if disk != "" {
				files = []string{disk}
				sum = fixture.Sha256(t, disk)
			}
			var p PostProcessor
			if err := p.Configure(map[string]interface{}{}); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := p.PostProcess(context.Background(), packersdk.TestUi(t), &packersdk.MockArtifact{FilesValue: files})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if disk != "" {
				if fixture.Sha256(t, disk) != sum {
					t.Error("the input changed")
				}
				if _, err := os.Stat(strings.TrimSuffix(disk, filepath.Ext(disk)) + ".scrub.json"); !os.IsNotExist(err) {
					t.Error("a report was written for a failed scrub")
				}
				before.AssertNoLeaksIn(t, filepath.Dir(disk))
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		name    string
		raw     map[string]interface{}
		wantErr string
	}{
		{"defaults", map[string]interface{}{}, ""},
		{"selection", map[string]interface{}{"operations": []string{"defaults", "-ssh-userdir", "user-account"}}, ""},
		{"unknown operation", map[string]interface{}{"operations": []string{"defaults", "no-such-op"}}, "no-such-op"},
		{"missing firstboot script", map[string]interface{}{"firstboot_script": "/nonexistent/first.sh"}, "firstboot_script"},
		{"negative root partition", map[string]interface{}{"root_partition": -1}, "root_partition"},
		{"hostname", map[string]interface{}{"hostname": "web1.example.org"}, ""},
		{"bad hostname", map[string]interface{}{"hostname": "web 1/x"}, `hostname "web 1/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p PostProcessor
			err := p.Configure(tt.raw)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Configure: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
