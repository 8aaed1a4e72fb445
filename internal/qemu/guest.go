package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/inroot"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/scrub"
)

// FactoryBootOps are the scrub operations that remove what a guest makes
// about itself on its first boot inside the factory: host keys, its
// machine id, cloud-init's instance state, DHCP leases, the random seed.
var FactoryBootOps = []string{
	"ssh-hostkeys", "machine-id", "cloud-init", "dhcp-client-state",
	"random-seed", "credential-secret", "utmp",
}

// sshdDropIn lets the build's key log in as root; sshd takes the first
// value it reads, and drop-ins are read in name order, so 00- wins.
const sshdDropIn = "/etc/ssh/sshd_config.d/00-imagefactory-build.conf"

var sshdInclude = regexp.MustCompile(`(?m)^\s*Include\s+/etc/ssh/sshd_config\.d/\*\.conf\s*$`)

// GuestState is what the image held before the factory boot, so that
// after it exactly what the factory added can be taken out again.
type GuestState struct {
	User     string
	Home     string // image path of the user's home
	UID      int
	GID      int
	Key      string // the build's authorized_keys line
	Injected bool   // the key was put in offline

	MAC string // the factory NIC's, once ProvideNetwork chose it

	hadSSHDir, hadAuthorized bool
	wroteDropIn              bool
	snap                     *snapshot // bootWatched, and what the build writes for the boot
	needDNS                  bool      // the image names no resolver
	Warnings                 []string
}

// Inspect records the image's state before the boot (root is its mounted
// root filesystem) for user, whose key the build will use.
func Inspect(root *inroot.Root, user, key string) (*GuestState, error) {
	g := &GuestState{User: user, Key: key, snap: newSnapshot()}
	home, uid, gid, err := lookupUser(root, user)
	if err != nil {
		return nil, err
	}
	g.Home, g.UID, g.GID = home, uid, gid
	if home != "" {
		g.hadSSHDir, _ = root.Exists(path.Join(home, ".ssh"))
		g.hadAuthorized, _ = root.Exists(path.Join(home, ".ssh", "authorized_keys"))
	}
	if err := g.snap.watch(root, bootWatched...); err != nil {
		return nil, err
	}
	g.Warnings = append(g.Warnings, g.snap.Warnings...)
	if g.needDNS, err = needsResolver(root); err != nil {
		return nil, err
	}
	return g, nil
}

// InjectKey puts the build's key in the user's authorized_keys (created
// 0600, owned by the user) and, for root, an sshd drop-in that accepts
// keys for root. Undo takes both out.
func (g *GuestState) InjectKey(root *inroot.Root) error {
	if g.Home == "" {
		return fmt.Errorf("inject_ssh_key: user %q is not in the image's /etc/passwd", g.User)
	}
	dir := path.Join(g.Home, ".ssh")
	if !g.hadSSHDir {
		if err := root.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := root.Lchown(dir, g.UID, g.GID); err != nil {
			return err
		}
	}
	ak := path.Join(dir, "authorized_keys")
	var old []byte
	if g.hadAuthorized {
		var err error
		if old, err = root.ReadFile(ak); err != nil {
			return err
		}
		if len(old) > 0 && old[len(old)-1] != '\n' {
			old = append(old, '\n')
		}
	}
	if err := root.WriteFile(ak, append(old, []byte(g.Key+"\n")...), 0o600); err != nil {
		return err
	}
	if err := root.Lchown(ak, g.UID, g.GID); err != nil {
		return err
	}
	g.Injected = true
	if g.User != "root" {
		return nil
	}
	conf, err := root.ReadFile("/etc/ssh/sshd_config")
	if err != nil {
		g.Warnings = append(g.Warnings, fmt.Sprintf("no /etc/ssh/sshd_config in the image (%v): is an SSH server installed?", err))
		return nil
	}
	if !sshdInclude.Match(conf) {
		g.Warnings = append(g.Warnings, "the image's sshd_config does not include /etc/ssh/sshd_config.d: root may be refused if it sets PermitRootLogin no")
		return nil
	}
	if ok, _ := root.Exists(sshdDropIn); ok {
		return fmt.Errorf("inject_ssh_key: %s already exists in the image", sshdDropIn)
	}
	if err := root.MkdirAll(path.Dir(sshdDropIn), 0o755); err != nil {
		return err
	}
	g.wroteDropIn = true
	return root.WriteFile(sshdDropIn, []byte("# Written by the imagefactory build; removed after it.\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"), 0o644)
}

// Undo removes, from the image after the boot, what the factory put in or
// the boot generated: the build's key (whether injected or written by
// cloud-init), the sshd drop-in, and through the scrub operations
// FactoryBootOps the guest's identity; and it puts back every path of
// bootWatched and every file written for the boot as it was before
// (network configuration, cloud-init's files, resolv.conf), but for what
// provisioners changed there after mark, the guest's clock when SSH first
// answered (zero: not known, and everything is put back; see
// snapshot.restore). The report lists every change, and with Action Kept
// every path left as a provisioner made it.
func (g *GuestState) Undo(ctx context.Context, root *inroot.Root, mark time.Time) (*scrub.Report, error) {
	var errs []error
	var extra []string
	if g.Home != "" {
		removed, err := g.removeKey(root)
		errs = append(errs, err)
		extra = append(extra, removed...)
	}
	if g.wroteDropIn {
		switch err := root.Remove(sshdDropIn); {
		case err == nil:
			extra = append(extra, sshdDropIn)
			g.wroteDropIn = false
		case errors.Is(err, fs.ErrNotExist):
			g.wroteDropIn = false
		default:
			errs = append(errs, err)
		}
	}
	restored, err := g.snap.restore(root, "factory-boot", mark)
	errs = append(errs, err)
	ops, err := scrub.Select(FactoryBootOps)
	if err != nil {
		return nil, err
	}
	rep, err := scrub.Run(ctx, root, ops, scrub.Options{})
	errs = append(errs, err)
	if rep == nil {
		rep = &scrub.Report{}
	}
	for _, p := range extra {
		rep.Changes = append(rep.Changes, scrub.Change{Op: "factory-boot", Path: p, Action: scrub.Removed})
	}
	rep.Changes = append(rep.Changes, restored...)
	return rep, errors.Join(errs...)
}

// removeKey takes the build's key out of authorized_keys (every line with
// its key blob), then the file and .ssh if the build made them.
func (g *GuestState) removeKey(root *inroot.Root) ([]string, error) {
	dir := path.Join(g.Home, ".ssh")
	ak := path.Join(dir, "authorized_keys")
	data, err := root.ReadFile(ak)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(g.Key)
	if len(fields) < 2 {
		return nil, fmt.Errorf("the build's key %q is not an authorized_keys line", g.Key)
	}
	blob := fields[1]
	var kept []string
	found := false
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, blob) {
			found = true
			continue
		}
		kept = append(kept, line)
	}
	if !found {
		return nil, nil
	}
	var done []string
	if len(kept) == 0 && !g.hadAuthorized {
		if err := root.Remove(ak); err != nil {
			return nil, err
		}
		done = append(done, ak)
		if !g.hadSSHDir {
			if ents, err := readDirNames(root, dir); err == nil && len(ents) == 0 {
				if err := root.Remove(dir); err == nil {
					done = append(done, dir)
				}
			}
		}
		return done, nil
	}
	out := strings.Join(kept, "\n")
	if out != "" {
		out += "\n"
	}
	if err := root.WriteFile(ak, []byte(out), 0o600); err != nil {
		return nil, err
	}
	return append(done, ak+" (the build's key)"), nil
}

// lookupUser finds user's home, uid and gid in the image's /etc/passwd;
// home is "" when the user is not there.
func lookupUser(root *inroot.Root, user string) (string, int, int, error) {
	data, err := root.ReadFile("/etc/passwd")
	if errors.Is(err, fs.ErrNotExist) {
		return "", 0, 0, nil
	}
	if err != nil {
		return "", 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 || f[0] != user {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || !path.IsAbs(f[5]) {
			return "", 0, 0, fmt.Errorf("the image's /etc/passwd entry for %s is malformed", user)
		}
		return path.Clean(f[5]), uid, gid, nil
	}
	return "", 0, 0, nil
}

// globIn lists the paths matching glob (a pattern in its last component
// only) inside the image.
func globIn(root *inroot.Root, glob string) ([]string, error) {
	dir, pat := path.Split(glob)
	names, err := readDirNames(root, dir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotDir) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if ok, _ := path.Match(pat, n); ok {
			out = append(out, path.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

var errNotDir = errors.New("not a directory")

func readDirNames(root *inroot.Root, dir string) ([]string, error) {
	fi, err := root.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, errNotDir
	}
	f, err := root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
