package sparsify

import (
	"slices"
	"strings"
	"testing"
)

func TestConfigure(t *testing.T) {
	tests := []struct {
		name    string
		raw     map[string]interface{}
		wantErr string
		check   func(*testing.T, Config)
	}{
		{"defaults", map[string]interface{}{}, "", func(t *testing.T, c Config) {
			if c.Format != "raw" || c.Compression != "" || !slices.Equal(c.Checksums, []string{"sha256"}) {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{"unset keys arrive as nil (HCL2)", map[string]interface{}{"checksums": nil, "format": nil}, "", func(t *testing.T, c Config) {
			if !slices.Equal(c.Checksums, []string{"sha256"}) {
				t.Errorf("checksums: %v", c.Checksums)
			}
		}},
		{"no checksums", map[string]interface{}{"checksums": []string{}}, "", func(t *testing.T, c Config) {
			if len(c.Checksums) != 0 {
				t.Errorf("checksums: %v", c.Checksums)
			}
		}},
		{"qcow2 zlib and md5", map[string]interface{}{"format": "qcow2", "compression": "zlib", "checksums": []string{"sha256", "md5"}}, "", nil},
		{"compression none", map[string]interface{}{"format": "qcow2", "compression": "none"}, "", func(t *testing.T, c Config) {
			if c.Compression != "" {
				t.Errorf("compression: %q", c.Compression)
			}
		}},
		{"bad format", map[string]interface{}{"format": "iso"}, `format "iso"`, nil},
		{"compression needs qcow2", map[string]interface{}{"compression": "zstd"}, `needs format = "qcow2"`, nil},
		{"bad compression", map[string]interface{}{"format": "qcow2", "compression": "lz4"}, `compression "lz4"`, nil},
		{"qcow2_compat 0.10 with zlib", map[string]interface{}{"format": "qcow2", "compression": "zlib", "qcow2_compat": "0.10"}, "", nil},
		{"qcow2_compat 0.10 refuses zstd", map[string]interface{}{"format": "qcow2", "compression": "zstd", "qcow2_compat": "0.10"}, `qcow2_compat "0.10" cannot hold zstd compressed clusters`, nil},
		{"qcow2_compat needs qcow2", map[string]interface{}{"format": "vmdk", "qcow2_compat": "1.1"}, `qcow2_compat "1.1" needs format = "qcow2"`, nil},
		{"bad qcow2_compat", map[string]interface{}{"format": "qcow2", "qcow2_compat": "2"}, `qcow2_compat "2" is not supported`, nil},
		{"shrink: free_space defaults to 64M", map[string]interface{}{"shrink": true}, "", func(t *testing.T, c Config) {
			if !c.Shrink || c.freeSpace != 64<<20 {
				t.Errorf("shrink %v free %d", c.Shrink, c.freeSpace)
			}
		}},
		{"shrink with free_space 0", map[string]interface{}{"shrink": true, "free_space": "0"}, "", func(t *testing.T, c Config) {
			if c.freeSpace != 0 {
				t.Errorf("free %d", c.freeSpace)
			}
		}},
		{"bad free_space", map[string]interface{}{"shrink": true, "free_space": "lots"}, "free_space", nil},
		{"bad root_partition", map[string]interface{}{"root_partition": -1}, "root_partition -1", nil},
		{"bad checksum", map[string]interface{}{"checksums": []string{"crc32"}}, `"crc32"`, nil},
		{"vmdk: streamOptimized by default", map[string]interface{}{"format": "vmdk"}, "", func(t *testing.T, c Config) {
			if c.subformat() != "streamOptimized" {
				t.Errorf("subformat %q", c.subformat())
			}
		}},
		{"vpc: dynamic by default", map[string]interface{}{"format": "vpc"}, "", func(t *testing.T, c Config) {
			if c.subformat() != "dynamic" {
				t.Errorf("subformat %q", c.subformat())
			}
		}},
		{"ova: 1 CPU, 1024 MiB", map[string]interface{}{"format": "ova"}, "", func(t *testing.T, c Config) {
			if c.subformat() != "streamOptimized" || c.ovaCPUs() != 1 || c.ovaMemory() != 1024 {
				t.Errorf("%q %d %d", c.subformat(), c.ovaCPUs(), c.ovaMemory())
			}
		}},
		{"vmdk monolithicSparse", map[string]interface{}{"format": "vmdk", "vmdk_subformat": "monolithicSparse"}, "", nil},
		{"vpc fixed", map[string]interface{}{"format": "vpc", "vpc_subformat": "fixed"}, "", nil},
		{"unknown vmdk_subformat", map[string]interface{}{"format": "vmdk", "vmdk_subformat": "monolithicFlat"}, `vmdk_subformat "monolithicFlat" is not one of streamOptimized, monolithicSparse`, nil},
		{"unknown vpc_subformat", map[string]interface{}{"format": "vpc", "vpc_subformat": "Fixed"}, `vpc_subformat "Fixed" is not one of dynamic, fixed`, nil},
		{"vmdk_subformat needs vmdk", map[string]interface{}{"format": "qcow2", "vmdk_subformat": "streamOptimized"}, `vmdk_subformat needs format = "vmdk" or "ova", not "qcow2"`, nil},
		{"vpc_subformat needs vpc", map[string]interface{}{"vpc_subformat": "fixed"}, `vpc_subformat needs format = "vpc", not "raw"`, nil},
		{"ova holds streamOptimized", map[string]interface{}{"format": "ova", "vmdk_subformat": "monolithicSparse"}, `vmdk_subformat "monolithicSparse": an OVA holds a streamOptimized vmdk`, nil},
		{"ova_memory needs ova", map[string]interface{}{"format": "vmdk", "ova_memory": 2048}, `ova_memory needs format = "ova"`, nil},
		{"bad ova_cpus", map[string]interface{}{"format": "ova", "ova_cpus": -2}, `ova_cpus -2`, nil},
		{"ova output name", map[string]interface{}{"format": "ova", "output": "out/web.tar"}, `output "out/web.tar": an OVA's name ends in .ova`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p PostProcessor
			err := p.Configure(tt.raw)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Configure: %v", err)
				}
				if tt.check != nil {
					tt.check(t, p.config)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestExtension(t *testing.T) {
	for format, want := range map[string]string{"qcow2": ".qcow2", "vmdk": ".vmdk", "vhdx": ".vhdx", "vpc": ".vhd", "ova": ".ova", "raw": ".raw"} {
		if got := extension(format); got != want {
			t.Errorf("extension(%q) = %q, want %q", format, got, want)
		}
	}
}
