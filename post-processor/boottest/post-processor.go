//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config,HTTPCheck
//go:generate ../../scripts/struct-markdown.sh

// Package boottest is the Packer glue of the imagefactory-boottest
// post-processor: it boots the artifact on a throwaway overlay, waits for
// what the template asks, checks the first boot and runs commands over
// SSH, and passes the artifact on unchanged. The work is done by
// internal/boottest.
package boottest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/boottest"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/cleanup"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/diskimage"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/hostcap"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/qemu"
	"github.com/imagefactory/packer-plugin-imagefactory/packerglue"
)

// BuilderID identifies the post-processor in configuration errors.
const BuilderID = "imagefactory.post-processor.boottest"

// HTTPCheck is one `http` block: an answer to wait for.
type HTTPCheck struct {
	// The URL as the guest serves it: `http://localhost/`,
	// `https://www.example.com:8443/health`. Its port (default 80, or 443
	// for https) is the guest's, forwarded from a free port on 127.0.0.1;
	// its host is sent as the Host header (and TLS server name) only. The
	// guest's certificate is not verified.
	URL string `mapstructure:"url" required:"true"`
	// The expected status. Defaults to 200. Redirects are not followed.
	Status int `mapstructure:"status"`
	// A string the body must contain.
	BodyContains string `mapstructure:"body_contains"`
}

// Config is the configuration of the imagefactory-boottest post-processor.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// How long, from power-on, the boot may take to meet every wait
	// (`login_prompt`, SSH, `tcp_ports`, `http`). Defaults to `10m` (a
	// boot under TCG takes one to two minutes on a loaded host).
	BootTimeout time.Duration `mapstructure:"boot_timeout"`
	// How long the guest may show no progress (nothing on its serial
	// console, no disk I/O) before it answers: it is taken as hung, and
	// the test fails with the console's last lines. Defaults to `5m`.
	BootStallTimeout time.Duration `mapstructure:"boot_stall_timeout"`
	// How long the waits may go on once systemd says the boot finished
	// (`systemctl is-system-running --wait` answered over SSH): a service
	// not enabled never answers, and the test fails then rather than at
	// `boot_timeout`. Defaults to `1m`.
	SettleTimeout time.Duration `mapstructure:"settle_timeout"`

	// Wait for a login prompt on the serial console (`login:` at the end
	// of a line). Defaults to true when `communicator = "none"`.
	LoginPrompt bool `mapstructure:"login_prompt"`
	// `ssh` (default): wait until the user logs in over SSH with a key
	// made for this test; it goes into the overlay's `authorized_keys`
	// offline, or, for an image with cloud-init, through a NoCloud seed
	// (as a cloud's first boot: cloud-init sets the hostname, and may
	// regenerate host keys). `none`: no SSH, no `checks`, no `inline`.
	Communicator string `mapstructure:"communicator"`
	// The SSH user. Defaults to `root`.
	SSHUsername string `mapstructure:"ssh_username"`
	// Guest TCP ports that must accept a connection (through QEMU's user
	// networking; the guest's side must be established, not only the
	// forwarded port's).
	TCPPorts []int `mapstructure:"tcp_ports"`
	// HTTP answers to wait for; see the `http` block.
	HTTP []HTTPCheck `mapstructure:"http"`
	// More guest TCP ports to forward from free ports on 127.0.0.1 (the
	// test prints which), for `inline` commands run with `shell-local`
	// afterwards or for a look while it runs.
	ForwardedPorts []int `mapstructure:"forwarded_ports"`

	// Commands run over SSH once every wait is met and the checks passed,
	// one by one, each by the user's login shell; each must exit 0.
	Inline []string `mapstructure:"inline"`
	// The built-in first-boot checks to run over SSH: `host-keys` (no SSH
	// host key the guest's sshd offers is one the image held before the
	// boot), `machine-id` (`/etc/machine-id` holds a 32-hex ID, not the
	// image's own), `hostname` (not this host's, nor one of
	// `factory_hostnames`), `system-running` (`systemctl
	// is-system-running --wait` says `running`; skipped without
	// systemd). Defaults to all four with SSH; `[]` runs none.
	Checks []string `mapstructure:"checks"`
	// `system-running` accepts `degraded` too; the failed units are
	// listed either way.
	AllowDegraded bool `mapstructure:"allow_degraded"`
	// Hostnames the guest must not have, besides this host's own (where
	// the image was built, which debootstrap copies into a tree).
	FactoryHostnames []string `mapstructure:"factory_hostnames"`
	// Host files of SSH public keys (`*.pub`, globs allowed) that the
	// `host-keys` check refuses too: the factory's own, recorded during
	// the build before a scrub took them out of the image. Each pattern
	// must match a file when the test runs.
	FactoryHostKeys []string `mapstructure:"factory_host_keys"`

	// The serial console's log. Defaults to the image's path with
	// `.console.log` for its extension, beside it; it is kept.
	ConsoleLog string `mapstructure:"console_log"`

	// The QEMU binary. Defaults to the one of the image's architecture,
	// read from its binaries, as the builder's qemu strategy does.
	QemuBinary string `mapstructure:"qemu_binary"`
	// `auto` (default), `kvm` or `tcg`, as the builder's: `auto` uses KVM
	// only where a test guest has been shown to run under it.
	Accelerator string `mapstructure:"accelerator"`
	// The `-cpu` model. By default the builder's choice for the image.
	CPUModel string `mapstructure:"cpu_model"`
	// Virtual CPUs. Defaults to 1.
	CPUs int `mapstructure:"cpus"`
	// Memory in MiB. Defaults to 1024.
	Memory int `mapstructure:"memory"`
	// `bios` (SeaBIOS) or `uefi` (OVMF, with a copy of `ovmf_vars` for
	// this test). Defaults to `bios`, or `uefi` for an arm64 image.
	Firmware string `mapstructure:"firmware"`
	// The UEFI firmware code. Defaults as the builder's.
	OVMFCode string `mapstructure:"ovmf_code"`
	// The UEFI variables template, copied for the test. Defaults as the
	// builder's.
	OVMFVars string `mapstructure:"ovmf_vars"`
	// Extra QEMU arguments, each a list appended as given, as the
	// builder's. A `-netdev` of id `net0` must be user-mode networking;
	// the test adds its forwards to it.
	QemuArgs [][]string `mapstructure:"qemuargs"`

	ctx interpolate.Context
}

// PostProcessor is the imagefactory-boottest post-processor.
type PostProcessor struct {
	config Config
}

// ConfigSpec returns the HCL2 spec generated by packer-sdc.
func (p *PostProcessor) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

// Configure decodes and validates the configuration.
func (p *PostProcessor) Configure(raws ...interface{}) error {
	c := &p.config
	c.Checks = nil
	if err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderID,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
	}, raws...); err != nil {
		return err
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"boot_timeout", &c.BootTimeout, 10 * time.Minute}, {"boot_stall_timeout", &c.BootStallTimeout, 5 * time.Minute}, {"settle_timeout", &c.SettleTimeout, time.Minute}} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			add("%s %s must be positive", d.name, *d.v)
		}
	}
	switch c.Communicator {
	case "":
		c.Communicator = "ssh"
	case "ssh", "none":
	default:
		add("communicator %q: use ssh (the default) or none", c.Communicator)
	}
	ssh := c.Communicator == "ssh"
	if c.SSHUsername == "" {
		c.SSHUsername = "root"
	}
	if !packerglue.IsSet(raws, "checks") && ssh {
		c.Checks = slices.Clone(boottest.Checks)
	}
	for _, ch := range c.Checks {
		if !slices.Contains(boottest.Checks, ch) {
			add("checks: %q is not one of %s", ch, strings.Join(boottest.Checks, ", "))
		}
	}
	if !ssh {
		if len(c.Checks) > 0 || len(c.Inline) > 0 {
			add(`checks and inline run over SSH: they need communicator = "ssh"`)
		}
		if !packerglue.IsSet(raws, "login_prompt") {
			c.LoginPrompt = true
		}
	}
	if !ssh && !c.LoginPrompt && len(c.TCPPorts) == 0 && len(c.HTTP) == 0 {
		add("nothing to wait for: set login_prompt, tcp_ports or http, or communicator = \"ssh\"")
	}
	for _, ports := range []struct {
		name string
		v    []int
	}{{"tcp_ports", c.TCPPorts}, {"forwarded_ports", c.ForwardedPorts}} {
		for _, p := range ports.v {
			if p < 1 || p > 65535 {
				add("%s: %d is not a TCP port", ports.name, p)
			}
		}
	}
	for i, h := range c.HTTP {
		u, err := url.Parse(h.URL)
		switch {
		case h.URL == "":
			add("http[%d]: url is required", i)
		case err != nil:
			add("http[%d]: url %q: %v", i, h.URL, err)
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			add("http[%d]: url %q: want http://host[:port]/path or https://...", i, h.URL)
		}
		if h.Status != 0 && (h.Status < 100 || h.Status > 599) {
			add("http[%d]: status %d is not an HTTP status", i, h.Status)
		}
	}
	if c.CPUs < 0 || c.Memory < 0 {
		add("cpus and memory must be positive")
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.Memory == 0 {
		c.Memory = 1024
	}
	switch c.Firmware {
	case "", qemu.FirmwareBIOS, qemu.FirmwareUEFI:
	default:
		add("firmware %q is not supported; use bios or uefi", c.Firmware)
	}
	if c.Accelerator == "" {
		c.Accelerator = hostcap.AccelAuto
	}
	// Decided here, so that a KVM that cannot run a guest fails in
	// seconds, before the build.
	if _, _, err := hostcap.Accelerator(c.Accelerator, ""); err != nil {
		errs = append(errs, err)
	}
	if _, err := qemu.UserNetdev(c.QemuArgs); err != nil {
		add("qemuargs: %v", err)
	}
	return errors.Join(errs...)
}

// PostProcess boots the artifact's disk image on a throwaway overlay and
// tests it. The image is never written; the artifact is returned as it
// came (same files, ID and state, HCP Packer metadata included; Tested
// names it), with keep and forceOverride so Packer never deletes it on the
// test's account.
func (p *PostProcessor) PostProcess(ctx context.Context, ui packersdk.Ui, in packersdk.Artifact) (packersdk.Artifact, bool, bool, error) {
	c := &p.config
	disk, format, err := diskimage.FindImage(in.Files())
	if err != nil {
		return nil, false, false, fmt.Errorf("imagefactory-boottest: %w", err)
	}
	console := c.ConsoleLog
	if console == "" {
		console = strings.TrimSuffix(disk, filepath.Ext(disk)) + ".console.log"
	}
	var factoryKeys []string
	for _, pat := range c.FactoryHostKeys {
		files, err := filepath.Glob(pat)
		if err == nil && len(files) == 0 {
			err = errors.New("matches no file")
		}
		if err != nil {
			return nil, false, false, fmt.Errorf("imagefactory-boottest: factory_host_keys %q: %w", pat, err)
		}
		factoryKeys = append(factoryKeys, files...)
	}
	// A killed run's QEMU and overlay go first, even when no imagefactory
	// builder (whose first step reaps) ran in this build.
	packerglue.ReapDead(ui)
	journal, closeJournal, err := packerglue.OpenJournal(ui, "boottest", disk)
	if err != nil {
		return nil, false, false, err
	}
	defer closeJournal()
	http := make([]boottest.HTTPCheck, len(c.HTTP))
	for i, h := range c.HTTP {
		http[i] = boottest.HTTPCheck{URL: h.URL, Status: h.Status, BodyContains: h.BodyContains}
	}
	ui.Say(fmt.Sprintf("Boot test of %s (%s), never written: a throwaway overlay", disk, format))
	start := time.Now()
	res, err := boottest.Run(ctx, boottest.Options{
		Disk: disk, ConsoleLog: console, Journal: journal, StateDir: cleanup.DefaultStateDir(),
		Machine: qemu.TargetChoice{Binary: c.QemuBinary, Firmware: c.Firmware, Code: c.OVMFCode, Vars: c.OVMFVars, Accelerator: c.Accelerator},
		CPU:     c.CPUModel, CPUs: c.CPUs, Memory: c.Memory, Extra: c.QemuArgs,
		BootTimeout: c.BootTimeout, StallTimeout: c.BootStallTimeout, SettleTimeout: c.SettleTimeout,
		LoginPrompt: c.LoginPrompt, SSH: c.Communicator == "ssh", SSHUser: c.SSHUsername,
		TCPPorts: c.TCPPorts, HTTP: http, ForwardPorts: c.ForwardedPorts,
		Inline: c.Inline, Checks: c.Checks, AllowDegraded: c.AllowDegraded, FactoryHostnames: c.FactoryHostnames,
		FactoryKeys: factoryKeys,
		Log:         ui.Say,
	})
	if err != nil && ctx.Err() != nil {
		return nil, false, false, fmt.Errorf("imagefactory-boottest: the boot test of %s was cancelled before it finished (%w)", disk, ctx.Err())
	} else if err != nil {
		return nil, false, false, fmt.Errorf("imagefactory-boottest: %s failed its boot test: %w", disk, err)
	}
	ui.Say(fmt.Sprintf("Boot test passed in %s (%s; waits met %s after power-on); console in %s",
		diskimage.FormatDuration(time.Since(start)), res.Accelerator, diskimage.FormatDuration(res.Booted), console))
	return &Tested{Artifact: in, Console: console}, true, true, nil
}
