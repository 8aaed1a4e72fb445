package imagefactory

import (
	"strings"
	"testing"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
)

// An aarch64 guest's -cpu: the x86-64 level of the image's glibc
// (isalevel) has no say; what the user set still wins.
func TestCPUModelArm64(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       Config
		accel     string
		want, why string
	}{
		{"tcg", Config{}, hostcap.AccelTCG, qemu.Arm64CPU, "pointer authentication"},
		{"kvm", Config{}, hostcap.AccelKVM, "host", "passed through by KVM"},
		{"cpu_model", Config{QemuConfig: QemuConfig{CPUModel: "cortex-a72"}}, hostcap.AccelTCG, "cortex-a72", "cpu_model"},
		{"qemuargs", Config{QemuConfig: QemuConfig{CPUModel: "cortex-a72", QemuArgs: [][]string{{"-cpu", "neoverse-n1"}}}}, hostcap.AccelTCG, "neoverse-n1", "qemuargs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No root: an aarch64 guest's choice never reads the image.
			model, why, err := cpuModel(&tc.cfg, qemuTarget{Arch: "aarch64", Accel: tc.accel}, nil)
			if err != nil || model != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("cpuModel = %q (%s), %v; want %q (%s)", model, why, err, tc.want, tc.why)
			}
		})
	}
}
