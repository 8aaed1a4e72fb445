package qemu

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
)

// ExtractKernel copies the image's kernel (and initrd, with wantInitrd) to
// dir on the host, for direct kernel boot: /vmlinuz and /initrd.img (the
// links Debian and Ubuntu keep), else the newest /boot/vmlinuz-* and its
// /boot/initrd.img-*. Links resolve inside the image only.
func ExtractKernel(root *inroot.Root, dir string, wantInitrd bool) (kernel, initrd string, err error) {
	kSrc, iSrc := "", ""
	if ok, _ := root.Exists("/vmlinuz"); ok {
		kSrc = "/vmlinuz"
		if ok, _ := root.Exists("/initrd.img"); ok {
			iSrc = "/initrd.img"
		}
	} else {
		names, err := readDirNames(root, "/boot")
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", "", err
		}
		var versions []string
		for _, n := range names {
			if v, ok := strings.CutPrefix(n, "vmlinuz-"); ok {
				versions = append(versions, v)
			}
		}
		if len(versions) == 0 {
			return "", "", errors.New("kernel = \"image\": the image has no /vmlinuz and no /boot/vmlinuz-*")
		}
		sort.Slice(versions, func(i, j int) bool { return versionLess(versions[i], versions[j]) })
		v := versions[len(versions)-1]
		kSrc = "/boot/vmlinuz-" + v
		if ok, _ := root.Exists("/boot/initrd.img-" + v); ok {
			iSrc = "/boot/initrd.img-" + v
		}
	}
	kernel = filepath.Join(dir, "vmlinuz")
	if err := root.CopyOut(kSrc, kernel); err != nil {
		return "", "", fmt.Errorf("copying the image's kernel %s: %w", kSrc, err)
	}
	if !wantInitrd {
		return kernel, "", nil
	}
	if iSrc == "" {
		return "", "", fmt.Errorf("initrd = \"image\": no initrd beside the image's kernel %s", kSrc)
	}
	initrd = filepath.Join(dir, "initrd.img")
	if err := root.CopyOut(iSrc, initrd); err != nil {
		return "", "", fmt.Errorf("copying the image's initrd %s: %w", iSrc, err)
	}
	return kernel, initrd, nil
}

// versionLess orders kernel versions by their numeric runs (6.1.0-9 <
// 6.1.0-10).
func versionLess(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' })
	}
	pa, pb := split(a), split(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		var na, nb int
		_, ea := fmt.Sscanf(pa[i], "%d", &na)
		_, eb := fmt.Sscanf(pb[i], "%d", &nb)
		if ea == nil && eb == nil && na != nb {
			return na < nb
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}
