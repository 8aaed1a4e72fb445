package imagefactory

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/packer-plugin-sdk/packer"
)

// checkInputs checks the host files the build reads, so that packer
// validate refuses what would fail only once the build runs: a local
// base_image and source_rootfs must exist and be readable (a URL is
// fetched only by the build). Kept apart from Prepare, whose table tests
// use paths that do not exist.
func (c *Config) checkInputs() error {
	var errs *packer.MultiError
	if path, ok := localBaseImage(c.BaseImage); ok && c.BaseImage != "" {
		if err := checkInputFile("base_image", path, false); err != nil {
			errs = packer.MultiErrorAppend(errs, err)
		}
	}
	if c.SourceRootfs != "" {
		if err := checkInputFile("source_rootfs", c.SourceRootfs, true); err != nil {
			errs = packer.MultiErrorAppend(errs, err)
		}
	}
	if errs != nil {
		return errs
	}
	return nil
}

// checkInputFile says in one sentence why option's path cannot be read: it
// does not exist, it cannot be opened, or it is a directory where a file is
// needed (dirOK: a directory is a root tree).
func checkInputFile(option, path string, dirOK bool) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		hint := "an image another build of the same template makes must exist before packer starts: build them one at a time with -only"
		if !filepath.IsAbs(path) {
			hint = "a relative path is relative to the directory packer runs in; " + hint
		}
		return fmt.Errorf("%s %s does not exist (%s)", option, path, hint)
	case err != nil:
		return fmt.Errorf("%s %s cannot be read: %v", option, path, errors.Unwrap(err))
	case st.IsDir() && !dirOK:
		return fmt.Errorf("%s %s is a directory; give a disk image file", option, path)
	}
	var f *os.File
	if st.IsDir() {
		_, err = os.ReadDir(path)
	} else if f, err = os.Open(path); err == nil {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("%s %s cannot be read: %v", option, path, errors.Unwrap(err))
	}
	return nil
}
