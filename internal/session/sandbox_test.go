package session

import (
	"os"
	"slices"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/mounts"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/sandbox"
)

// TestBoundDevices: a bound host device node joins the device allow-list;
// a bind of the host's /dev (or a directory in it) turns the list off.
func TestBoundDevices(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("/dev/zero", dir+"/zero"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		list []mounts.ChrootMount
		devs []sandbox.Device
		all  bool
	}{
		{"defaults", mounts.DefaultChrootMounts(), nil, false},
		{"a device node", []mounts.ChrootMount{{FSType: "bind", Source: "/dev/full", Target: "/dev/full"}}, []sandbox.Device{{Major: 1, Minor: 7}}, false},
		{"a link to one", []mounts.ChrootMount{{FSType: "bind", Source: dir + "/zero", Target: "/z"}}, []sandbox.Device{{Major: 1, Minor: 5}}, false},
		{"the host's /dev", []mounts.ChrootMount{{FSType: "bind", Source: "/dev", Target: "/dev"}}, nil, true},
		{"a directory of it", []mounts.ChrootMount{{FSType: "bind", Source: "/dev/pts/", Target: "/mnt"}}, nil, true},
		{"another directory", []mounts.ChrootMount{{FSType: "bind", Source: dir, Target: "/mnt"}}, nil, false},
		{"a missing source", []mounts.ChrootMount{{FSType: "bind", Source: dir + "/none", Target: "/mnt"}}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devs, all := boundDevices(tc.list)
			if !slices.Equal(devs, tc.devs) || (all != "") != tc.all {
				t.Errorf("boundDevices: %v, %q; want %v, all %v", devs, all, tc.devs, tc.all)
			}
		})
	}
}
