package bootloader

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// The x86 boot protocol's setup header (the kernel's
// Documentation/arch/x86/boot.rst): "HdrS" at 0x202, and from protocol
// 2.00 on a 16-bit kernel_version at 0x20E: the offset, minus 0x200, of a
// NUL-terminated string that starts with the release (uname -r).
const (
	setupMagicOffset   = 0x202
	kernelVersionField = 0x20E
)

// KernelVersion is the release of the kernel image at path, as uname -r
// and /lib/modules/ name it: read from the image's setup header, else
// from a file name vmlinuz-RELEASE. Errors say neither was found.
func KernelVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 0x210)
	if _, err := io.ReadFull(f, head); err == nil && string(head[setupMagicOffset:setupMagicOffset+4]) == "HdrS" {
		if off := binary.LittleEndian.Uint16(head[kernelVersionField:]); off != 0 {
			s := make([]byte, 256)
			n, _ := f.ReadAt(s, int64(off)+0x200)
			s = s[:n]
			if i := bytes.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			}
			if fields := strings.Fields(string(s)); len(fields) > 0 {
				return fields[0], nil
			}
		}
	}
	if v, ok := strings.CutPrefix(filepath.Base(path), "vmlinuz-"); ok && v != "" {
		return v, nil
	}
	return "", fmt.Errorf("%s: no kernel release in its x86 setup header, nor in its name (vmlinuz-RELEASE)", path)
}
