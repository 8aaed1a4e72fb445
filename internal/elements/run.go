package elements

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// InTarget is where the hooks tree is seen inside the image (DIB's).
const InTarget = "/tmp/in_target.d"

// own is the tree's directory for what this package adds (helpers,
// environment, package lists, pkg-map tables). DIB's tree has no such
// name, and a dotted name is never copied from an element.
const own = ".imagefactory"

// Config is what the user asks for.
type Config struct {
	Elements       []string
	Paths          []string // ELEMENTS_PATH, earlier wins
	Environment    map[string]string
	Phases         []string
	ExcludeElems   []string
	ExcludeScripts []string // globs on "phase.d/script" or "element/phase.d/script"
	DebugTrace     bool
	ImageName      string
	BlockDevice    string // the image's root device on the host, if known
}

// UI receives the run's output.
type UI interface {
	Say(string)     // headlines
	Message(string) // element output and details
}

// Plan is a resolved element set.
type Plan struct {
	Config   Config
	Elements []*Element // the user's, expanded, in expansion order
	Phases   []Phase
	Overrode []Overridden
}

// Resolve finds and expands the elements and checks the options; it
// touches no image.
func Resolve(c Config) (*Plan, error) {
	if len(c.Elements) == 0 {
		return nil, errors.New("elements: at least one element is required")
	}
	if len(c.Paths) == 0 {
		return nil, errors.New("elements_path: at least one directory is required")
	}
	for _, g := range c.ExcludeScripts {
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("exclude_scripts: %q: %w", g, err)
		}
	}
	phases, err := SelectPhases(c.Phases)
	if err != nil {
		return nil, fmt.Errorf("phases: %w", err)
	}
	all, over, err := FindAll(c.Paths)
	if err != nil {
		return nil, err
	}
	els, err := Expand(c.Elements, all, ExpandOptions{Provided: Provided(), Exclude: c.ExcludeElems, Paths: c.Paths})
	if err != nil {
		return nil, err
	}
	return &Plan{Config: c, Elements: els, Phases: phases, Overrode: over}, nil
}

// Names lists the element names, the built-in ones last (IMAGE_ELEMENT).
func (p *Plan) Names() []string {
	var out []string
	for _, e := range p.Elements {
		out = append(out, e.Name)
	}
	return append(out, BuiltinNames...)
}

// hook is one script of a phase to run.
type hook struct {
	phase   Phase
	name    string
	element string
}

// Run is one run of a plan on one image.
type Run struct {
	plan    *Plan
	ui      UI
	target  Target
	work    string // host temp dir (DIB's TMP_BUILD_DIR)
	tree    *Tree
	env     map[string]string // DIB's variables and the user's
	facts   Facts
	envList []string // environment.d files in order
	all     []*Element
	pkgs    map[string][]string  // "install.d.uninstall" -> packages
	interps map[interpreter]bool // what the image has, as probed
}

// Execute runs the plan's phases on t. Everything it makes on the host
// lives under a temporary directory removed at the end.
func (p *Plan) Execute(ctx context.Context, t Target, ui UI) (err error) {
	work, err := os.MkdirTemp("", "imagefactory-elements-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(work); rerr != nil && err == nil {
			err = rerr
		}
	}()
	r := &Run{plan: p, ui: ui, target: t, work: work}
	if err := r.prepare(ctx); err != nil {
		return err
	}
	return r.phases(ctx)
}

func (r *Run) prepare(ctx context.Context) error {
	c := r.plan.Config
	for _, o := range r.plan.Overrode {
		r.ui.Message(fmt.Sprintf("element %s: %s overrides %s", o.Name, o.Winner, o.Loser))
	}
	var names []string
	for _, e := range r.plan.Elements {
		names = append(names, e.Name)
	}
	r.ui.Say("Elements: " + strings.Join(names, " "))

	need := map[string]string{"DISTRO_NAME": "", "DIB_RELEASE": "", "DIB_INIT_SYSTEM": "", "ARCH": ""}
	missing := false
	for k := range need {
		if c.Environment[k] == "" {
			missing = true
		}
	}
	if missing {
		f, err := Detect(ctx, r.target)
		if err != nil {
			return err
		}
		r.facts = f
	}
	builtins, err := writeBuiltins(filepath.Join(r.work, "builtin"))
	if err != nil {
		return err
	}
	r.all = append(append([]*Element{}, r.plan.Elements...), builtins...)
	r.env = r.environment()
	r.ui.Message(fmt.Sprintf("DISTRO_NAME=%s DIB_RELEASE=%s DIB_INIT_SYSTEM=%s ARCH=%s",
		r.env["DISTRO_NAME"], r.env["DIB_RELEASE"], r.env["DIB_INIT_SYSTEM"], r.env["ARCH"]))

	// Dependencies first, so that an element's deeper entries (static/...)
	// overwrite those of the elements it depends on. DIB's order here is
	// that of a bash associative array: unspecified.
	var merge []*Element
	for i := len(r.plan.Elements) - 1; i >= 0; i-- {
		merge = append(merge, r.plan.Elements[i])
	}
	tree, err := BuildTree(filepath.Join(r.work, "hooks"), append(merge, builtins...))
	if err != nil {
		return err
	}
	r.tree = tree
	return r.writeOwn()
}

// environment is what every hook sees: DIB's variables, then the user's,
// which win.
func (r *Run) environment() map[string]string {
	c := r.plan.Config
	names := r.plan.Names()
	var yaml, array strings.Builder
	for _, e := range r.all {
		fmt.Fprintf(&yaml, "%s: %s\n", e.Name, e.Path)
		fmt.Fprintf(&array, "[%s]=%s ", e.Name, e.Path)
	}
	home, _ := os.UserHomeDir()
	if home == "" {
		home = "/root"
	}
	imageName := c.ImageName
	if imageName == "" {
		imageName = "image"
	}
	env := map[string]string{
		"DISTRO_NAME":                         r.facts.DistroName,
		"DIB_RELEASE":                         r.facts.Release,
		"DIB_INIT_SYSTEM":                     r.facts.InitSystem,
		"ARCH":                                r.facts.Arch,
		"IMAGE_ELEMENT":                       strings.Join(names, " "),
		"IMAGE_ELEMENT_YAML":                  yaml.String(),
		"ELEMENTS_PATH":                       strings.Join(c.Paths, ":"),
		"IMAGE_NAME":                          imageName,
		"TMP_BUILD_DIR":                       r.work,
		"TMP_IMAGE_DIR":                       filepath.Join(r.work, "image"),
		"TMP_HOOKS_PATH":                      filepath.Join(r.work, "hooks"),
		"DIB_DEBUG_TRACE":                     "0",
		"DIB_DEFAULT_INSTALLTYPE":             "source",
		"DIB_IMAGE_CACHE":                     filepath.Join(home, ".cache", "image-create"),
		"DIB_LOCKFILES":                       filepath.Join(home, ".cache", "dib", "lockfiles"),
		"DIB_OFFLINE":                         "",
		"DIB_CHECKSUM":                        "0",
		"DIB_NO_TMPFS":                        "1",
		"DIB_MIN_TMPFS":                       "2",
		"DIB_ARGS":                            strings.Join(c.Elements, " "),
		"LC_ALL":                              "C",
		"BASH_FUNC_get_image_element_array%%": "() {  echo \"" + array.String() + "\"\n}",
	}
	if c.DebugTrace {
		env["DIB_DEBUG_TRACE"] = "1"
	}
	if root := r.target.RootPath(); root != "" {
		env["TMP_MOUNT_PATH"] = root
		env["TARGET_ROOT"] = root
	}
	if c.BlockDevice != "" {
		env["IMAGE_BLOCK_DEVICE"] = c.BlockDevice
	}
	// The system's python3 first: it is the one that has DIB's modules
	// when Debian's python3-diskimage-builder is installed.
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(py); err == nil {
			env["DIB_PYTHON_EXEC"] = p
			break
		}
	}
	if fi, err := os.Stat("/usr/lib/python3/dist-packages/diskimage_builder/lib"); err == nil && fi.IsDir() {
		env["_LIB"] = "/usr/lib/python3/dist-packages/diskimage_builder/lib" // some DIB hooks source $_LIB/...
	}
	for k, v := range c.Environment {
		env[k] = v
	}
	return env
}

// writeOwn writes what this package adds to the tree: the helpers, the
// environment files, the evaluated package-installs and pkg-map tables.
func (r *Run) writeOwn() error {
	dir := filepath.Join(r.tree.Dir, own)
	if err := writeHelpers(filepath.Join(dir, "bin")); err != nil {
		return err
	}
	// DIB copies dib-run-parts to the root of the tree too.
	if err := copyFile(filepath.Join(dir, "bin", "dib-run-parts"), filepath.Join(r.tree.Dir, "dib-run-parts"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(r.tree.Dir, "environment.d"), 0o755); err != nil {
		return err
	}
	// As disk-image-create does after generate_hooks.
	if err := os.WriteFile(filepath.Join(r.tree.Dir, "environment.d", "11-dib-install-type.bash"),
		[]byte("export DIB_DEFAULT_INSTALLTYPE=${DIB_DEFAULT_INSTALLTYPE:-\""+r.env["DIB_DEFAULT_INSTALLTYPE"]+"\"}\n"), 0o644); err != nil {
		return err
	}
	envFiles, err := EnvFiles(filepath.Join(r.tree.Dir, "environment.d"))
	if err != nil {
		return err
	}
	r.envList = envFiles
	files := map[string]string{
		"environment-files": strings.Join(envFiles, "\n") + "\n",
		"environment":       insideEnvironment(r.env),
		"init-system":       r.env["DIB_INIT_SYSTEM"] + "\n",
	}
	r.pkgs = map[string][]string{}
	maps := map[string]*PkgMap{}
	for _, e := range r.all {
		m, err := LoadPkgMap(e)
		if err != nil {
			return err
		}
		if m != nil {
			maps[e.Name] = m
			files["pkg-map/"+e.Name] = m.Table()
		}
	}
	plan, err := SquashPackageInstalls(r.all, r.env)
	if err != nil {
		return err
	}
	for _, ph := range []string{"pre-install.d", "install.d", "post-install.d"} {
		for _, in := range []string{"install", "uninstall"} {
			pk := plan.Packages(ph, in, maps, r.env["DISTRO_NAME"], r.env["DIB_RELEASE"])
			files["package-installs/"+ph+"."+in] = strings.Join(pk, "\n") + "\n"
			r.pkgs[ph+"."+in] = pk
			if len(pk) > 0 {
				r.ui.Message(fmt.Sprintf("package-installs: %s %s: %s", ph, in, strings.Join(pk, " ")))
			}
		}
	}
	for ph := range plan {
		if ph != "pre-install.d" && ph != "install.d" && ph != "post-install.d" {
			return fmt.Errorf("package-installs: phase %q is not one of pre-install.d, install.d, post-install.d", ph)
		}
	}
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if name == "environment" {
			mode = 0o600 // may hold the user's secrets; root reads it
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			return err
		}
	}
	return nil
}

// insideEnvironment is the file run-hook sources in the image: the same
// variables as outside (DIB passes them with sudo -E), the image's PATH
// with the helpers first, HOME=/root and no TMPDIR (as run_in_target).
func insideEnvironment(env map[string]string) string {
	var b strings.Builder
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "BASH_FUNC_") || !validName(k) {
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(env[k]))
	}
	if f, ok := env["BASH_FUNC_get_image_element_array%%"]; ok {
		// export -f is bash's; /bin/sh (no bash in the image) keeps the function in its own shell.
		fmt.Fprintf(&b, "get_image_element_array () %s\n[ -z \"${BASH_VERSION:-}\" ] || export -f get_image_element_array\n", f[len("() "):])
	}
	fmt.Fprintf(&b, "export PATH=%s/%s/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", InTarget, own)
	b.WriteString("export HOME=/root\nunset TMPDIR VIRTUAL_ENV\n")
	return b.String()
}

func validName(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// selectHooks lists the hooks of a phase to run, logging the skipped ones.
func (r *Run) selectHooks(ph Phase) ([]hook, error) {
	run, skipped, err := SelectScripts(filepath.Join(r.tree.Dir, ph.Name))
	if err != nil {
		return nil, err
	}
	for _, s := range skipped {
		r.ui.Message(fmt.Sprintf("%s: skipping %s of element %s: %s", ph.Name, s.Name, r.tree.Owner[ph.Name+"/"+s.Name], s.Reason))
	}
	var out []hook
	for _, name := range run {
		h := hook{phase: ph, name: name, element: r.tree.Owner[ph.Name+"/"+name]}
		if !r.needed(h) {
			continue
		}
		if r.excluded(h) {
			r.ui.Message(fmt.Sprintf("%s: skipping %s of element %s: exclude_scripts", ph.Name, name, h.element))
			continue
		}
		out = append(out, h)
	}
	return out, nil
}

// needed tells whether a built-in hook has work in this run: one with
// nothing to install, no bin/, no static/... is not started at all.
func (r *Run) needed(h hook) bool {
	nonEmpty := func(rel string) bool {
		ents, err := os.ReadDir(filepath.Join(r.tree.Dir, rel))
		return err == nil && len(ents) > 0
	}
	switch h.element {
	case "package-installs":
		in := "install"
		if strings.Contains(h.name, "uninstall") {
			in = "uninstall"
		}
		return len(r.pkgs[h.phase.Name+"."+in]) > 0
	case "install-bin":
		return nonEmpty("bin")
	case "install-static":
		return nonEmpty("static")
	case "dib-init-system":
		return nonEmpty(filepath.Join("init-scripts", r.env["DIB_INIT_SYSTEM"]))
	case "source-repositories":
		m, _ := filepath.Glob(filepath.Join(r.tree.Dir, "source-repository-*"))
		return len(m) > 0
	}
	return true
}

func (r *Run) excluded(h hook) bool {
	for _, g := range r.plan.Config.ExcludeScripts {
		for _, s := range []string{h.phase.Name + "/" + h.name, h.element + "/" + h.phase.Name + "/" + h.name} {
			if ok, _ := path.Match(g, s); ok {
				return true
			}
		}
	}
	return false
}

func (r *Run) phases(ctx context.Context) error {
	hooks := map[string][]hook{}
	var needRoot []string
	for _, ph := range r.plan.Phases {
		hs, err := r.selectHooks(ph)
		if err != nil {
			return err
		}
		hooks[ph.Name] = hs
		if !ph.Inside && r.target.RootPath() == "" {
			for _, h := range hs {
				if !(h.element == "source-repositories" && h.name == "98-source-repositories") {
					needRoot = append(needRoot, fmt.Sprintf("%s/%s (element %s)", ph.Name, h.name, h.element))
				}
			}
		}
	}
	for _, ph := range r.plan.Phases {
		if !ph.Inside {
			continue
		}
		var names []string
		for _, h := range hooks[ph.Name] {
			names = append(names, h.name)
		}
		p := filepath.Join(r.tree.Dir, own, "hooks", ph.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	if len(needRoot) > 0 {
		return fmt.Errorf("these hooks run outside the image and need its root mounted on this host (TARGET_ROOT), which this build does not provide (no MountPath in the builder's generated data): %s; exclude them (exclude_scripts, phases) or use the imagefactory builder's chroot strategy", strings.Join(needRoot, ", "))
	}
	// The tree stays visible across consecutive inside phases with hooks
	// (pre-install.d to post-install.d): one bind, not three. Outside
	// phases never see it in the image.
	var hide func() error
	hideNow := func() error {
		if hide == nil {
			return nil
		}
		h := hide
		hide = nil
		if err := h(); err != nil {
			return fmt.Errorf("removing %s from the image: %w", InTarget, err)
		}
		return nil
	}
	for _, ph := range r.plan.Phases {
		if len(hooks[ph.Name]) == 0 {
			continue
		}
		if !ph.Inside {
			if err := hideNow(); err != nil {
				return err
			}
		} else if hide == nil {
			h, err := r.target.ShowHooks(r.tree.Dir)
			if err != nil {
				return fmt.Errorf("%s: making the hooks visible at %s: %w", ph.Name, InTarget, err)
			}
			hide = h
		}
		if err := r.phase(ctx, ph, hooks[ph.Name]); err != nil {
			return errors.Join(err, hideNow())
		}
	}
	return hideNow()
}

type timing struct {
	h hook
	d time.Duration
}

func (r *Run) phase(ctx context.Context, ph Phase, hooks []hook) error {
	if len(hooks) == 0 {
		return nil
	}
	where := "outside the image"
	if ph.Inside {
		where = "in the image"
	}
	noun := "hooks"
	if len(hooks) == 1 {
		noun = "hook"
	}
	r.ui.Say(fmt.Sprintf("Phase %s (%d %s, %s)", ph.Name, len(hooks), noun, where))
	if len(r.envList) > 0 {
		r.ui.Message(fmt.Sprintf("%s: sourcing environment.d: %s", ph.Name, strings.Join(r.envList, " ")))
	}
	if ph.Inside {
		return r.insidePhase(ctx, ph, hooks)
	}
	var times []timing
	defer func() { r.timings(ph, times) }()
	for _, h := range hooks {
		start := time.Now()
		code, err := r.hook(ctx, h)
		times = append(times, timing{h, time.Since(start)})
		if err != nil {
			return fmt.Errorf("element %s, phase %s, script %s: %w", h.element, ph.Name, h.name, err)
		}
		if code != 0 {
			return fmt.Errorf("element %s, phase %s, script %s: exited with status %d", h.element, ph.Name, h.name, code)
		}
	}
	return nil
}

// insidePhase runs a whole phase with one command in the image (one
// chroot, environment.d sourced once, as dib-run-parts), following the
// hooks by the marker lines run-phase prints.
func (r *Run) insidePhase(ctx context.Context, ph Phase, hooks []hook) error {
	byName := map[string]hook{}
	for _, h := range hooks {
		byName[h.name] = h
	}
	m := &phaseMarks{mark: newMark(), phase: ph, byName: byName, ui: r.ui}
	w := newLineWriter(m.line)
	if err := r.checkInterpreters(ctx, ph, hooks); err != nil {
		return err
	}
	shell, err := r.phaseShell(ctx)
	if err != nil {
		return err
	}
	cmd := fmt.Sprintf("%s %s/%s/bin/run-phase %s %s %s", shell, InTarget, own, InTarget, ph.Name, m.mark)
	code, err := r.target.RunInside(ctx, cmd, w, w)
	w.Flush()
	m.finish()
	r.timings(ph, m.times)
	if err != nil {
		return fmt.Errorf("phase %s: %w", ph.Name, err)
	}
	if m.failed != nil {
		return fmt.Errorf("element %s, phase %s, script %s: exited with status %d", m.failed.element, ph.Name, m.failed.name, m.failedCode)
	}
	if code != 0 {
		if m.cur != nil {
			return fmt.Errorf("element %s, phase %s, script %s: ended with status %d", m.cur.element, ph.Name, m.cur.name, code)
		}
		return fmt.Errorf("phase %s: exited with status %d before its first hook (environment.d?)", ph.Name, code)
	}
	if len(m.times) != len(hooks) {
		return fmt.Errorf("phase %s: %d of %d hooks ran", ph.Name, len(m.times), len(hooks))
	}
	return nil
}

func (r *Run) timings(ph Phase, times []timing) {
	if len(times) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s timings:", ph.Name)
	var total time.Duration
	for _, t := range times {
		fmt.Fprintf(&b, "\n  %-40s %-24s %8.3f s", t.h.name, t.h.element, t.d.Seconds())
		total += t.d
	}
	fmt.Fprintf(&b, "\n  %-40s %-24s %8.3f s", "total", "", total.Seconds())
	r.ui.Message(b.String())
}

// hook runs one hook of an outside phase and returns its exit status.
func (r *Run) hook(ctx context.Context, h hook) (int, error) {
	prefix := fmt.Sprintf("%s %s/%s: ", h.element, h.phase.Name, h.name)
	out := newLineWriter(func(l string) { r.ui.Message(prefix + l) })
	defer out.Flush()
	if h.element == "source-repositories" && h.name == "98-source-repositories" {
		repos, err := ParseSourceRepos(r.tree.Dir, r.env)
		if err != nil {
			return 0, err
		}
		if err := FetchSourceRepos(ctx, r.target, repos, filepath.Join(r.work, "source-repositories"), func(s string) { r.ui.Message(prefix + s) }); err != nil {
			return 0, err
		}
		return 0, nil
	}
	return r.outside(ctx, h, out)
}

// outside runs a hook on the host with DIB's variables, as root, in its
// own process group (a cancelled build stops what it started). sudo, which
// elements call outside, is a pass-through when the build is root.
func (r *Run) outside(ctx context.Context, h hook, out io.Writer) (int, error) {
	cmd := exec.Command("/bin/bash", filepath.Join(r.tree.Dir, own, "bin", "run-hook"), r.tree.Dir, h.phase.Name, h.name)
	cmd.Dir = r.work
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for k, v := range r.env {
		env[k] = v
	}
	if os.Geteuid() == 0 {
		shim := filepath.Join(r.work, "host-bin")
		if err := writeSudoShim(shim); err != nil {
			return 0, err
		}
		env["PATH"] = shim + ":" + env["PATH"]
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(3 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return 0, err
}

// writeSudoShim puts a sudo on PATH that drops its options and runs the
// command: the build is root already, and the host may have no sudo.
func writeSudoShim(dir string) error {
	p := filepath.Join(dir, "sudo")
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(`#!/bin/bash
# sudo for hooks of a build that runs as root: options are dropped.
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; break ;;
        -u|-g|-C|-h|-p|-r|-t|-T|-U|-D) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || exit 0
exec "$@"
`), 0o755)
}
