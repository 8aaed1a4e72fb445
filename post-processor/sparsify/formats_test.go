package sparsify

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// hostFiles adds up to limit bytes of the host's /usr/bin to a fixture
// tree: real, compressible data for the formats to hold.
func hostFiles(limit int64) func(dir string) {
	return func(dir string) {
		names, _ := filepath.Glob("/usr/bin/*")
		sort.Strings(names)
		os.MkdirAll(filepath.Join(dir, "opt/data"), 0o755)
		var n int64
		for _, name := range names {
			fi, err := os.Lstat(name)
			if err != nil || !fi.Mode().IsRegular() || n+fi.Size() > limit {
				continue
			}
			b, err := os.ReadFile(name)
			if err != nil {
				continue
			}
			os.WriteFile(filepath.Join(dir, "opt/data", filepath.Base(name)), b, 0o644)
			n += fi.Size()
		}
	}
}

// TestFormats: one GPT disk with an ESP and 24 MiB of the host's programs,
// 3 sectors longer than a whole MiB (as some tools cut raw images),
// sparsified with one epoch into the formats clouds take: vmdk
// streamOptimized (vSphere, OVA), a fixed VHD (Azure) and an OVA. The
// zstd qcow2 of the same run holds the input's files (the trim's mount
// writes into the superblock, so the disks differ there); with the epoch
// every output holds that same trimmed disk (qemu-img compare), and a
// second run gives the same bytes. The input is never changed.
func TestFormats(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	t.Setenv("IMAGEFACTORY_STATE_DIR", filepath.Join(t.TempDir(), "state"))
	t.Setenv(repro.EnvVar, "")
	disk := fixture.NewDisk(t, fixture.DiskOptions{Table: "gpt", ESP: true, Tree: hostFiles(24 << 20)})
	input := disk.Path
	size := disk.Size + 3*512
	if err := os.Truncate(input, size); err != nil {
		t.Fatal(err)
	}
	inputSum := fixture.Sha256(t, input)
	// The epoch is now, after the fixture's files were written: the
	// reproducible trim clamps the times later than the epoch (its own
	// mount's) and none of the files' (the SOURCE_DATE_EPOCH convention),
	// so they compare equal to the input's.
	// A second later than the last file's time, whatever its nanoseconds.
	time.Sleep(1100 * time.Millisecond)
	epoch := strconv.FormatInt(time.Now().Unix(), 10)

	run := func(t *testing.T, cfg map[string]interface{}, name string) string {
		t.Helper()
		out := filepath.Join(t.TempDir(), name)
		c := map[string]interface{}{"output": out, "packer_build_name": "formats", "source_date_epoch": epoch, "checksums": []string{}}
		for k, v := range cfg {
			c[k] = v
		}
		var p PostProcessor
		if err := p.Configure(c); err != nil {
			t.Fatal(err)
		}
		ui := &recordUi{Ui: packersdk.TestUi(t)}
		art, _, _, err := p.PostProcess(context.Background(), ui, &packersdk.MockArtifact{FilesValue: []string{input}})
		if err != nil {
			t.Fatal(err)
		}
		if files := art.Files(); !slices.Equal(files, []string{out}) {
			t.Errorf("artifact files %v, want [%s]", files, out)
		}
		if art.State(registryimage.ArtifactStateURI) == nil {
			t.Errorf("no HCP Packer registry metadata")
		}
		t.Logf("%s: %d bytes\n%s", name, fixture.FileSize(t, out), strings.Join(ui.lines, "\n"))
		if fixture.Sha256(t, input) != inputSum {
			t.Fatalf("the input changed")
		}
		return out
	}
	ref := run(t, map[string]interface{}{"format": "qcow2", "compression": "zstd"}, "ref.qcow2")
	// The reference holds the input's files, to the byte and the metadata.
	refRaw := filepath.Join(t.TempDir(), "ref.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", ref, refRaw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	want, got := fixture.Manifest(t, input, disk.Root()), fixture.Manifest(t, refRaw, disk.Root())
	if diff := fixture.ManifestDiff(want, got, 20); len(diff) > 0 || len(got) < 100 {
		t.Fatalf("the zstd qcow2's files differ from the input's (%d files):\n%s", len(got), strings.Join(diff, "\n"))
	}
	os.Remove(refRaw)
	same := func(t *testing.T, img, f string) {
		t.Helper()
		if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", f, ref, img).CombinedOutput(); err != nil {
			t.Errorf("qemu-img compare with the zstd qcow2: %v: %s", err, out)
		}
	}
	reproducible := func(t *testing.T, cfg map[string]interface{}, name, first string) {
		t.Helper()
		if a, b := fixture.Sha256(t, first), fixture.Sha256(t, run(t, cfg, name)); a != b {
			t.Errorf("the same disk, the same epoch: sha256 %s and %s", a, b)
		}
	}

	t.Run("vmdk streamOptimized", func(t *testing.T) {
		cfg := map[string]interface{}{"format": "vmdk"}
		out := run(t, cfg, "disk.vmdk")
		info := qemuInfo(t, "vmdk", out)
		if !strings.Contains(info, "create type: streamOptimized") {
			t.Errorf("qemu-img info:\n%s", info)
		}
		got, want := fixture.FileSize(t, out), fixture.FileSize(t, ref)
		t.Logf("streamOptimized %d bytes, zstd qcow2 %d bytes (%.1f %%)", got, want, 100*float64(got)/float64(want))
		if float64(got) > 1.1*float64(want) || float64(got) < 0.9*float64(want) {
			t.Errorf("streamOptimized vmdk %d bytes, not within 10 %% of the zstd qcow2's %d", got, want)
		}
		same(t, out, "vmdk")
		reproducible(t, cfg, "disk.vmdk", out)
	})
	t.Run("vmdk monolithicSparse", func(t *testing.T) {
		out := run(t, map[string]interface{}{"format": "vmdk", "vmdk_subformat": "monolithicSparse"}, "disk.vmdk")
		if info := qemuInfo(t, "vmdk", out); !strings.Contains(info, "create type: monolithicSparse") {
			t.Errorf("qemu-img info:\n%s", info)
		}
		same(t, out, "vmdk")
	})
	t.Run("vpc fixed (Azure)", func(t *testing.T) {
		cfg := map[string]interface{}{"format": "vpc", "vpc_subformat": "fixed"}
		out := run(t, cfg, "disk.vhd")
		// The footer, the file's last 512 bytes ("Virtual Hard Disk Image
		// Format Specification", Hard Disk Footer Format): cookie, disk
		// type 2 (fixed) at byte 60, current size at byte 48 (big-endian).
		fileSize := fixture.FileSize(t, out)
		footer := make([]byte, 512)
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.ReadAt(footer, fileSize-512); err != nil {
			t.Fatal(err)
		}
		current := int64(binary.BigEndian.Uint64(footer[48:]))
		if string(footer[:8]) != "conectix" || binary.BigEndian.Uint32(footer[60:]) != 2 {
			t.Errorf("footer cookie %q, disk type %d; want conectix, 2 (fixed)", footer[:8], binary.BigEndian.Uint32(footer[60:]))
		}
		if current%(1<<20) != 0 || current < size || current-size >= 1<<20 || fileSize != current+512 {
			t.Errorf("current size %d (file %d) for an input of %d: want the next whole MiB, the file 512 bytes more", current, fileSize, size)
		}
		var info struct {
			VirtualSize int64 `json:"virtual-size"`
		}
		if err := json.Unmarshal([]byte(qemuInfoJSON(t, "vpc", out)), &info); err != nil || info.VirtualSize != current {
			t.Errorf("qemu-img info: virtual size %d (%v), footer %d", info.VirtualSize, err, current)
		}
		same(t, out, "vpc") // over the input's length; the added tail reads as zeros
		reproducible(t, cfg, "disk.vhd", out)
	})
	t.Run("ova", func(t *testing.T) {
		cfg := map[string]interface{}{"format": "ova", "ova_cpus": 2, "ova_memory": 2048}
		out := run(t, cfg, "web.ova")
		checkOVA(t, out, "web", same)
		reproducible(t, cfg, "web.ova", out)
	})
}

// checkOVA checks an OVA without the writer's code: ustar members in
// order (web.ovf, web.mf, the vmdk), the manifest's sha256 of each,
// the descriptor's file size and disk capacity against the members, the
// vmdk streamOptimized and holding the disk (same).
func checkOVA(t *testing.T, path, name string, same func(*testing.T, string, string)) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	var names []string
	sizes := map[string]int64{}
	sums := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Format != tar.FormatUSTAR || h.Typeflag != tar.TypeReg {
			t.Errorf("%s: format %v, type %c; want a ustar regular file", h.Name, h.Format, h.Typeflag)
		}
		names = append(names, h.Name)
		w, err := os.Create(filepath.Join(dir, h.Name))
		if err != nil {
			t.Fatal(err)
		}
		hs := sha256.New()
		n, err := io.Copy(io.MultiWriter(w, hs), tr)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		sizes[h.Name], sums[h.Name] = n, hex.EncodeToString(hs.Sum(nil))
	}
	vmdk := name + "-disk1.vmdk"
	if want := []string{name + ".ovf", name + ".mf", vmdk}; !slices.Equal(names, want) {
		t.Fatalf("members %v, want %v (DSP0243: the descriptor first, the manifest beside it)", names, want)
	}
	mf, _ := os.ReadFile(filepath.Join(dir, name+".mf"))
	sc := bufio.NewScanner(strings.NewReader(string(mf)))
	seen := 0
	for sc.Scan() {
		line := sc.Text()
		for _, m := range []string{name + ".ovf", vmdk} {
			if strings.HasPrefix(line, "SHA256("+m+")= ") {
				seen++
				if got := strings.TrimPrefix(line, "SHA256("+m+")= "); got != sums[m] {
					t.Errorf("manifest: %s has sha256 %s, the member %s", m, got, sums[m])
				}
			}
		}
	}
	if seen != 2 {
		t.Errorf("manifest:\n%s\nwant one SHA256 line for the ovf and one for the vmdk", mf)
	}

	var env struct {
		XMLName xml.Name `xml:"http://schemas.dmtf.org/ovf/envelope/1 Envelope"`
		Files   []struct {
			ID   string `xml:"http://schemas.dmtf.org/ovf/envelope/1 id,attr"`
			Href string `xml:"http://schemas.dmtf.org/ovf/envelope/1 href,attr"`
			Size string `xml:"http://schemas.dmtf.org/ovf/envelope/1 size,attr"`
		} `xml:"References>File"`
		Disks []struct {
			Capacity string `xml:"http://schemas.dmtf.org/ovf/envelope/1 capacity,attr"`
			Units    string `xml:"http://schemas.dmtf.org/ovf/envelope/1 capacityAllocationUnits,attr"`
			FileRef  string `xml:"http://schemas.dmtf.org/ovf/envelope/1 fileRef,attr"`
			Format   string `xml:"http://schemas.dmtf.org/ovf/envelope/1 format,attr"`
		} `xml:"DiskSection>Disk"`
		System struct {
			ID string `xml:"http://schemas.dmtf.org/ovf/envelope/1 id,attr"`
			OS struct {
				ID string `xml:"http://schemas.dmtf.org/ovf/envelope/1 id,attr"`
			} `xml:"OperatingSystemSection"`
			Items []struct {
				ResourceType    int    `xml:"ResourceType"`
				VirtualQuantity int    `xml:"VirtualQuantity"`
				HostResource    string `xml:"HostResource"`
				Parent          string `xml:"Parent"`
				InstanceID      string `xml:"InstanceID"`
			} `xml:"VirtualHardwareSection>Item"`
			Config []struct {
				Key   string `xml:"key,attr"`
				Value string `xml:"value,attr"`
			} `xml:"VirtualHardwareSection>Config"`
		} `xml:"VirtualSystem"`
	}
	ovf, _ := os.ReadFile(filepath.Join(dir, name+".ovf"))
	if err := xml.Unmarshal(ovf, &env); err != nil {
		t.Fatalf("the descriptor is not OVF XML: %v\n%s", err, ovf)
	}
	if len(env.Files) != 1 || env.Files[0].Href != vmdk || env.Files[0].Size != strconv.FormatInt(sizes[vmdk], 10) {
		t.Errorf("References: %+v; want one File %s of %d bytes", env.Files, vmdk, sizes[vmdk])
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	member := filepath.Join(dir, vmdk)
	if err := json.Unmarshal([]byte(qemuInfoJSON(t, "vmdk", member)), &info); err != nil {
		t.Fatal(err)
	}
	if len(env.Disks) != 1 || env.Disks[0].Capacity != strconv.FormatInt(info.VirtualSize, 10) || env.Disks[0].Units != "byte" ||
		env.Disks[0].FileRef != env.Files[0].ID ||
		env.Disks[0].Format != "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" {
		t.Errorf("DiskSection: %+v; want one disk of capacity %d bytes in file1, streamOptimized", env.Disks, info.VirtualSize)
	}
	types := map[int]int{}
	for _, it := range env.System.Items {
		types[it.ResourceType]++
		switch it.ResourceType {
		case 3:
			if it.VirtualQuantity != 2 {
				t.Errorf("CPUs %d, want 2", it.VirtualQuantity)
			}
		case 4:
			if it.VirtualQuantity != 2048 {
				t.Errorf("memory %d MiB, want 2048", it.VirtualQuantity)
			}
		case 17:
			if it.HostResource != "ovf:/disk/vmdisk1" {
				t.Errorf("the disk item names %q", it.HostResource)
			}
		}
	}
	if types[3] != 1 || types[4] != 1 || types[6] != 1 || types[17] != 1 || env.System.OS.ID == "" || env.System.ID != name {
		t.Errorf("VirtualSystem %q: items by ResourceType %v, OS %q; want one CPU (3), memory (4), SCSI controller (6), disk (17)", env.System.ID, types, env.System.OS.ID)
	}
	// The fixture has an ESP and no BIOS boot partition.
	if !slices.ContainsFunc(env.System.Config, func(c struct {
		Key   string `xml:"key,attr"`
		Value string `xml:"value,attr"`
	}) bool {
		return c.Key == "firmware" && c.Value == "efi"
	}) {
		t.Errorf("no firmware efi in %+v", env.System.Config)
	}
	if info := qemuInfo(t, "vmdk", member); !strings.Contains(info, "create type: streamOptimized") {
		t.Errorf("the OVA's vmdk: qemu-img info:\n%s", info)
	}
	same(t, member, "vmdk")
}

func qemuInfo(t *testing.T, f, path string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-f", f, path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v: %s", path, err, out)
	}
	return string(out)
}

func qemuInfoJSON(t *testing.T, f, path string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", "-f", f, path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	return string(out)
}

// recordUi keeps what the post-processor says, for the test's log.
type recordUi struct {
	packersdk.Ui
	lines []string
}

func (u *recordUi) Say(s string) { u.lines = append(u.lines, s); u.Ui.Say(s) }
