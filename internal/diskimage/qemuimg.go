package diskimage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/qcow2canon"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/repro"
)

// Info is what Inspect learns about an image.
type Info struct {
	Path          string
	Format        Format
	VirtualSize   int64  // bytes the guest sees
	ActualSize    int64  // bytes allocated on the host
	BackingFile   string // resolved path of the backing file, "" if none
	BackingFormat Format // as recorded in the image, may be ""
}

// qemuImgInfo is the subset of `qemu-img info --output=json` we use.
type qemuImgInfo struct {
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	ActualSize          int64  `json:"actual-size"`
	BackingFilename     string `json:"backing-filename"`
	FullBackingFilename string `json:"full-backing-filename"`
	BackingFormat       string `json:"backing-filename-format"`
	ClusterSize         int64  `json:"cluster-size"`
}

type qemuImgCheck struct {
	ImageEndOffset int64 `json:"image-end-offset"`
	Corruptions    int64 `json:"corruptions"`
	CheckErrors    int64 `json:"check-errors"`
}

// Inspect asks qemu-img about an image whose format is detected from its
// content (never guessed by qemu-img, which would let a raw image posing as
// qcow2 name arbitrary host files as its backing file). For qcow2 it also
// checks that the backing file exists and that the image is not damaged,
// so a truncated download fails here and not deep inside a build. Errors
// do not name path (the caller names the user's input, which path may be a
// working copy of) but for Detect's.
func Inspect(ctx context.Context, path string) (Info, error) {
	format, err := Detect(path)
	if err != nil {
		return Info{}, err
	}
	out, err := runQemuImg(ctx, "info", "--output=json", "-f", string(format), path)
	if err != nil {
		return Info{}, err
	}
	var qi qemuImgInfo
	if err := json.Unmarshal(out, &qi); err != nil {
		return Info{}, fmt.Errorf("parse qemu-img info output: %w", err)
	}
	info := Info{
		Path:          path,
		Format:        Format(qi.Format),
		VirtualSize:   qi.VirtualSize,
		ActualSize:    qi.ActualSize,
		BackingFormat: Format(qi.BackingFormat),
	}
	if qi.BackingFilename != "" {
		info.BackingFile = qi.FullBackingFilename
		if info.BackingFile == "" {
			info.BackingFile = qi.BackingFilename
		}
		// json: and protocol backings (nbd:, http:) are not files to look for.
		if !strings.Contains(info.BackingFile, ":") || strings.HasPrefix(info.BackingFile, "/") {
			if _, err := os.Stat(info.BackingFile); errors.Is(err, fs.ErrNotExist) {
				return info, fmt.Errorf("its backing file %s (recorded in the %s image as %q) does not exist: give the image with its backing file, or flatten it (qemu-img convert -O qcow2)",
					info.BackingFile, format, qi.BackingFilename)
			} else if err != nil {
				return info, fmt.Errorf("its backing file %s (recorded in the %s image as %q) cannot be used: %w",
					info.BackingFile, format, qi.BackingFilename, err)
			}
		}
	}
	if format == QCOW2 {
		if err := checkQCOW2(ctx, path, qi.ClusterSize); err != nil {
			return info, err
		}
	}
	return info, nil
}

// checkQCOW2 runs `qemu-img check` and also compares the image's end offset
// with the file size, since a file cut short by a failed download is the
// damage we expect most.
func checkQCOW2(ctx context.Context, path string, clusterSize int64) error {
	cmd := exec.CommandContext(ctx, "qemu-img", "check", "--output=json", "-f", "qcow2", path)
	var stdout bytes.Buffer
	stderr := &headBuffer{limit: 4096}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	setProcessGroup(cmd)
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("qemu-img check: %w", ctx.Err())
	}
	var chk qemuImgCheck
	_ = json.Unmarshal(stdout.Bytes(), &chk)
	first := firstLine(stderr.String())

	var exit *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exit) {
		return fmt.Errorf("run qemu-img check: %w", runErr)
	}
	// Exit codes: 0 clean, 1 check could not finish, 2 corruptions,
	// 3 leaked clusters only (harmless: space waste, not data loss).
	code := 0
	if exit != nil {
		code = exit.ExitCode()
	}
	if code == 1 || code == 2 || chk.Corruptions > 0 || chk.CheckErrors > 0 {
		if first == "" {
			first = fmt.Sprintf("%d corruptions, %d check errors", chk.Corruptions, chk.CheckErrors)
		}
		return fmt.Errorf("the qcow2 is damaged (%s): download it again, or see qemu-img check", first)
	}
	if code != 0 && code != 3 {
		return fmt.Errorf("qemu-img check failed (exit %d): %s", code, first)
	}
	// The last cluster may legitimately be partly written, so compare whole clusters.
	if st, err := os.Stat(path); err == nil && clusterSize > 0 && chk.ImageEndOffset > (st.Size()+clusterSize-1)/clusterSize*clusterSize {
		return fmt.Errorf("the qcow2 is damaged: the file is %d bytes but its data reaches byte %d (a truncated download?): download it again",
			st.Size(), chk.ImageEndOffset)
	}
	return nil
}

// ConvertOptions tune Convert.
type ConvertOptions struct {
	// Compression of qcow2 clusters: "" (none), "zstd" or "zlib"; qcow2
	// output only. zstd is about 5x faster than zlib here, and smaller.
	Compression string
	// Progress, if set, receives qemu-img's progress in percent (0..100).
	Progress func(pct float64)
	// Repro, when enabled, makes the output a function of the input and
	// of Repro alone (writes in order, the formats' identifiers and times
	// derived from it: see repro.go). Nil: qemu's fastest, random ones.
	Repro *repro.Source
	// Compat of a qcow2 output: "" (qemu-img's default, 1.1), "1.1" or
	// "0.10" (see CheckQCOW2Compat).
	Compat string
	// Subformat of a vmdk or vpc output (see Subformats): "" is
	// qemu-img's default (monolithicSparse, dynamic). A fixed vpc is
	// written with force_size=on, so its virtual size is the input's to
	// the byte rather than rounded up to a CHS geometry.
	Subformat string
}

// QCOW2 compat levels (qemu-img's -o compat=; QEMU's docs/interop/qcow2.txt:
// version 2 is 0.10, version 3 is 1.1).
const (
	QCOW2Compat11  = "1.1"
	QCOW2Compat010 = "0.10"
)

// CheckQCOW2Compat validates a qcow2_compat option against the cluster
// compression asked for ("" for none): a version 2 (0.10) image reads in
// QEMU before 1.1 but has no compression_type header field, so it holds
// zlib clusters only, never zstd (qcow2.txt, "compression type", an
// incompatible feature of version 3). The errors name the options.
func CheckQCOW2Compat(compat, compression string) error {
	switch compat {
	case "", QCOW2Compat11:
	case QCOW2Compat010:
		if compression == "zstd" {
			return fmt.Errorf("qcow2_compat %q cannot hold zstd compressed clusters (a 0.10 image has no compression type field): use compression = \"zlib\", or qcow2_compat = %q", compat, QCOW2Compat11)
		}
	default:
		return fmt.Errorf("qcow2_compat %q is not supported; use %q (the default, QEMU 1.1 and later) or %q (older QEMU)", compat, QCOW2Compat11, QCOW2Compat010)
	}
	return nil
}

// ConvertToRaw converts src (of format srcFmt) to a sparse raw image at dst.
func ConvertToRaw(ctx context.Context, src string, srcFmt Format, dst string, progress func(pct float64)) error {
	return Convert(ctx, src, srcFmt, dst, Raw, ConvertOptions{Progress: progress})
}

// Convert runs qemu-img convert from src to dst. The output is written to
// dst+".part" and renamed on success; cancelling ctx kills qemu-img (its
// whole process group) and removes the part file. With opts.Repro enabled,
// the same input gives the same bytes (see repro.go).
func Convert(ctx context.Context, src string, srcFmt Format, dst string, dstFmt Format, opts ConvertOptions) (err error) {
	if srcFmt == "" || dstFmt == "" {
		return fmt.Errorf("convert %s to %s: source and destination formats must be given", src, dst)
	}
	switch opts.Compression {
	case "", "zstd", "zlib":
	default:
		return fmt.Errorf("convert %s: compression %q is not one of zstd, zlib", src, opts.Compression)
	}
	if opts.Compression != "" && dstFmt != QCOW2 {
		return fmt.Errorf("convert %s to %s: compression needs qcow2 output, not %s", src, dst, dstFmt)
	}
	part := dst + ".part"
	// A reproducible compressed qcow2 is written out of order, then laid
	// out anew (see repro.go).
	canon := opts.Repro.Enabled() && dstFmt == QCOW2 && opts.Compression != ""
	out := part
	var sc *scratch
	if canon {
		if sc, err = scratchFor(ctx, src, srcFmt, dst); err != nil {
			return fmt.Errorf("convert %s: %w", src, err)
		}
		defer sc.close()
		out = sc.arg
	}
	args := []string{"convert", "-p", "-f", string(srcFmt), "-O", string(dstFmt)}
	args = append(args, convertWrites(opts.Repro, canon)...)
	// Zero runs of 4 KiB or more become holes (raw) or unallocated clusters.
	args = append(args, "-S", "4k")
	if err := CheckQCOW2Compat(opts.Compat, opts.Compression); err != nil {
		return fmt.Errorf("convert %s: %w", src, err)
	}
	if opts.Compat != "" && dstFmt != QCOW2 {
		return fmt.Errorf("convert %s to %s: qcow2 compat needs qcow2 output, not %s", src, dst, dstFmt)
	}
	if err := CheckSubformat("subformat", dstFmt, opts.Subformat); err != nil {
		return fmt.Errorf("convert %s to %s: %w", src, dst, err)
	}
	var o []string
	if opts.Subformat != "" {
		o = append(o, "subformat="+opts.Subformat)
	}
	if dstFmt == VPC && opts.Subformat == VPCFixed {
		o = append(o, "force_size=on")
	}
	if opts.Compression != "" {
		args = append(args, "-c")
		o = append(o, "compression_type="+opts.Compression)
	}
	if opts.Compat != "" {
		o = append(o, "compat="+opts.Compat)
	}
	if len(o) > 0 {
		args = append(args, "-o", strings.Join(o, ","))
	}
	args = append(args, src, out)

	defer func() {
		if err != nil {
			os.Remove(part)
		}
	}()

	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	setProcessGroup(cmd)
	if sc != nil && sc.extra != nil {
		cmd.ExtraFiles = []*os.File{sc.extra}
	}
	stderr := &headBuffer{limit: 8192}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("convert %s: %w", src, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("convert %s: start qemu-img: %w", src, err)
	}
	parseProgress(stdout, opts.Progress)
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("convert %s to %s: %w", src, dst, ctx.Err())
	}
	if waitErr != nil {
		return fmt.Errorf("convert %s (%s) to %s (%s): qemu-img convert: %v: %s",
			src, srcFmt, dst, dstFmt, waitErr, strings.TrimSpace(stderr.String()))
	}
	if canon {
		if err := qcow2canon.Canonicalize(sc.path, part); err != nil {
			return fmt.Errorf("convert %s to %s: laying out the qcow2: %w", src, dst, err)
		}
	}
	if err := normalize(part, dst, dstFmt, opts.Repro); err != nil {
		return fmt.Errorf("convert %s: %w", src, err)
	}
	if err := os.Rename(part, dst); err != nil {
		return fmt.Errorf("convert %s: %w", src, err)
	}
	return nil
}

// parseProgress reads qemu-img -p output, "    (12.34/100%)\r" repeated,
// and reports each percentage. It drains r even without a callback.
func parseProgress(r io.Reader, fn func(float64)) {
	sc := bufio.NewScanner(r)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		if fn == nil {
			continue
		}
		s := strings.TrimSpace(sc.Text())
		s = strings.TrimPrefix(s, "(")
		if i := strings.IndexByte(s, '/'); i > 0 {
			if pct, err := strconv.ParseFloat(s[:i], 64); err == nil {
				fn(pct)
			}
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// runQemuImg runs qemu-img and returns its stdout; its stderr goes into the error.
func runQemuImg(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	setProcessGroup(cmd)
	var stdout bytes.Buffer
	stderr := &headBuffer{limit: 8192}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qemu-img %s: %w", args[0], ctx.Err())
		}
		return nil, fmt.Errorf("qemu-img %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// setProcessGroup puts the command in its own process group and makes
// context cancellation kill the whole group, so nothing qemu-img started
// outlives the build.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
}

// headBuffer keeps the first limit bytes written to it: qemu-img check can
// print one line per damaged cluster, megabytes of it.
type headBuffer struct {
	buf   bytes.Buffer
	limit int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.limit - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (h *headBuffer) String() string { return h.buf.String() }

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// CreateOverlay makes overlay a qcow2 whose backing file is base (of format
// baseFmt, named by its absolute path): writes to the overlay never reach
// base, and what is discarded in it reads as zeros (qcow2 v3 zero clusters),
// not as base's data.
func CreateOverlay(ctx context.Context, base string, baseFmt Format, overlay string) error {
	abs, err := filepath.Abs(base)
	if err != nil {
		return err
	}
	if _, err := runQemuImg(ctx, "create", "-q", "-f", "qcow2", "-o", "compat=1.1", "-b", abs, "-F", string(baseFmt), overlay); err != nil {
		return fmt.Errorf("overlay on %s: %w", base, err)
	}
	return nil
}

// ResizeQCOW2 sets a qcow2 image's virtual size (qemu-img resize); an
// overlay grows without touching its backing file.
func ResizeQCOW2(ctx context.Context, path string, size int64) error {
	if _, err := runQemuImg(ctx, "resize", "-q", "-f", "qcow2", path, fmt.Sprint(size)); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	return nil
}

// QCOW2CompatOf reads the compat level of the qcow2 image at path from its
// header's version field (docs/interop/qcow2.txt, "Header": bytes 4-7,
// big-endian; 2 is compat 0.10, 3 is 1.1).
func QCOW2CompatOf(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var h [8]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return "", fmt.Errorf("%s: the qcow2 header: %w", path, err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return "", fmt.Errorf("%s is not a qcow2 image", path)
	}
	switch v := binary.BigEndian.Uint32(h[4:]); v {
	case 2:
		return QCOW2Compat010, nil
	case 3:
		return QCOW2Compat11, nil
	default:
		return "", fmt.Errorf("%s: qcow2 version %d", path, v)
	}
}
