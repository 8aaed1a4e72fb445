package partition

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/fixture"
)

// TestCheckGrow: layouts whose last partition cannot grow are refused by
// name, before anything is written; the others (Ubuntu's root numbered 1
// but lying last among them) grow the partition that ends last.
func TestCheckGrow(t *testing.T) {
	needTool(t, "sfdisk", "sgdisk")
	dos := func(script string) func(t *testing.T, p string) {
		return func(t *testing.T, p string) { run(t, "label: dos\n"+script, "sfdisk", "-q", p) }
	}
	sgdisk := func(args ...string) func(t *testing.T, p string) {
		return func(t *testing.T, p string) { run(t, "", "sgdisk", append(args, p)...) }
	}
	tests := []struct {
		name  string
		build func(t *testing.T, p string)
		want  string // "" = growable
		grows int    // the partition GrowLast grows when growable
	}{
		{"installer layout: logical swap after the root", dos("start=2048, size=40960, type=83\nstart=43008, type=5\nstart=45056, size=4096, type=82\n"),
			"partition 5 (Linux swap, logical, in extended partition 2) lies after partition 1 at the end of the disk", 0},
		{"logical ext4 last", dos("start=2048, size=40960, type=83\nstart=43008, type=5\nstart=45056, size=2048, type=83\nstart=49152, size=4096, type=83\n"),
			"partition 6 (Linux, logical, in extended partition 2) lies after partition 1", 0},
		{"empty extended partition last", dos("start=2048, size=40960, type=83\nstart=43008, size=4096, type=5\n"),
			"partition 2 (Extended, an extended partition) lies after partition 1", 0},
		{"primary swap last", dos("start=2048, size=40960, type=83\nstart=43008, size=4096, type=82\n"),
			"partition 2 (Linux swap) lies after partition 1", 0},
		{"gpt swap last", sgdisk("-n", "1:2048:+20M", "-n", "2:0:+2M", "-t", "2:8200"),
			"partition 2 (Linux swap) lies after partition 1", 0},
		{"primary after the extended partition", dos("start=2048, size=8192, type=5\nstart=4096, size=2048, type=82\nstart=10240, size=40960, type=83\n"), "", 2},
		{"swap first, root last", dos("start=2048, size=4096, type=82\nstart=6144, size=40960, type=83\n"), "", 2},
		{"ubuntu: 14 BIOS boot, 15 ESP, 16 /boot, 1 root last", sgdisk(
			"-n", "14:2048:+4M", "-t", "14:ef02", "-n", "15:0:+10M", "-t", "15:ef00",
			"-n", "16:0:+10M", "-t", "16:ea00", "-n", "1:0:0", "-t", "1:8300"), "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.SparseFile(t, 64<<20)
			tt.build(t, p)
			if err := os.Truncate(p, 128<<20); err != nil {
				t.Fatal(err)
			}
			before := fileSum(t, p)
			err := CheckGrow(p)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckGrow: %v", err)
				}
				got, err := GrowLast(p)
				if err != nil || got.Number != tt.grows {
					t.Fatalf("GrowLast grew partition %d (%v), want %d", got.Number, err, tt.grows)
				}
				return
			}
			var blocked *GrowBlockedError
			if !errors.As(err, &blocked) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckGrow = %v, want a refusal containing %q", err, tt.want)
			}
			todo := []string{"leave disk_size unset", "a primary partition lying last"}
			if blocked.Swap {
				todo = []string{"leave disk_size unset", "swap file", "before the root partition", "swapoff"}
			}
			for _, what := range todo {
				if !strings.Contains(err.Error(), what) {
					t.Errorf("the refusal does not say what to do (%q): %v", what, err)
				}
			}
			if _, err := GrowLast(p); !errors.As(err, &blocked) || !strings.Contains(err.Error(), p) {
				t.Errorf("GrowLast = %v, want the same refusal naming %s", err, p)
			}
			if fileSum(t, p) != before {
				t.Error("a refused growth changed the disk")
			}
			t.Log(err)
		})
	}
}
