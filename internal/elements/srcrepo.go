package elements

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// SourceRepo is one line of a source-repository-* file.
type SourceRepo struct {
	Name, Type, Dest, Location, Ref string
	Element                         string
}

// DIB's get_repos_for_element regex.
var repoLine = regexp.MustCompile(`^([^ ]+) (git|tar|file|package) ?(/[^ ]+)? ?([^ ]+)? ?([^ ]*)$`)

var nonAlnum = regexp.MustCompile(`[^A-Za-z0-9]`)

// ParseSourceRepos reads every source-repository-* file at the root of the
// hooks tree (as DIB, after the merge), expanding $VARS from env and
// applying DIB_REPOTYPE_/DIB_REPOLOCATION_/DIB_REPOREF_<name> overrides.
// Repositories whose install type (DIB_INSTALLTYPE_<name>, default
// DIB_DEFAULT_INSTALLTYPE) is not "source" are left out, as in DIB.
func ParseSourceRepos(treeDir string, env map[string]string) ([]SourceRepo, error) {
	files, _ := filepath.Glob(filepath.Join(treeDir, "source-repository-*"))
	var out []SourceRepo
	for _, f := range files {
		if strings.HasSuffix(f, "~") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for n := 1; sc.Scan(); n++ {
			line := strings.Join(strings.Fields(os.Expand(sc.Text(), func(k string) string { return env[k] })), " ")
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			m := repoLine.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("%s line %d: cannot parse %q as a source repository", filepath.Base(f), n, line)
			}
			r := SourceRepo{Name: m[1], Type: m[2], Dest: m[3], Location: m[4], Ref: m[5], Element: strings.TrimPrefix(filepath.Base(f), "source-repository-")}
			key := nonAlnum.ReplaceAllString(r.Name, "_")
			if v := env["DIB_REPOTYPE_"+key]; v != "" {
				r.Type = v
			}
			if v := env["DIB_REPOLOCATION_"+key]; v != "" {
				r.Location = v
			}
			if v := env["DIB_REPOREF_"+key]; v != "" {
				r.Ref = v
			}
			if r.Ref == "" {
				switch r.Type {
				case "tar":
					r.Ref = "*"
				case "git":
					r.Ref = "master"
				}
			}
			it := env["DIB_INSTALLTYPE_"+key]
			if it == "" {
				it = env["DIB_DEFAULT_INSTALLTYPE"]
			}
			if it != "" && it != "source" {
				continue
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// FetchSourceRepos stages each repository on the host under work (from a
// local path only: this provisioner reaches no network) and copies it into
// the image at its destination, then appends the destinations to the
// image's /etc/dib-source-repositories as DIB does.
func FetchSourceRepos(ctx context.Context, t Target, repos []SourceRepo, work string, log func(string)) error {
	if len(repos) == 0 {
		return nil
	}
	var list bytes.Buffer
	_ = t.Download("/etc/dib-source-repositories", &list)
	for i, r := range repos {
		if strings.Contains(r.Location, "://") && !strings.HasPrefix(r.Location, "file://") {
			return fmt.Errorf("source repository %s (element %s): %s is not a local path; imagefactory-elements fetches nothing from the network (set DIB_REPOLOCATION_%s to a local copy)", r.Name, r.Element, r.Location, nonAlnum.ReplaceAllString(r.Name, "_"))
		}
		loc := strings.TrimPrefix(r.Location, "file://")
		if r.Dest == "" {
			return fmt.Errorf("source repository %s (element %s): no destination", r.Name, r.Element)
		}
		stage := filepath.Join(work, fmt.Sprintf("repo-%d", i))
		log(fmt.Sprintf("source repository %s: %s %s -> %s", r.Name, r.Type, loc, r.Dest))
		switch r.Type {
		case "file":
			f, err := os.Open(loc)
			if err != nil {
				return fmt.Errorf("source repository %s: %w", r.Name, err)
			}
			if err := mkdirInside(ctx, t, path.Dir(r.Dest)); err != nil {
				f.Close()
				return err
			}
			err = t.Upload(r.Dest, f, 0o644)
			f.Close()
			if err != nil {
				return fmt.Errorf("source repository %s: %w", r.Name, err)
			}
		case "tar":
			if err := os.MkdirAll(stage, 0o755); err != nil {
				return err
			}
			if out, err := exec.CommandContext(ctx, "tar", "-C", stage, "-xzf", loc).CombinedOutput(); err != nil {
				return fmt.Errorf("source repository %s: tar -xzf %s: %v: %s", r.Name, loc, err, out)
			}
			matches, _ := filepath.Glob(filepath.Join(stage, r.Ref))
			if len(matches) == 0 {
				return fmt.Errorf("source repository %s: %q matches nothing in %s", r.Name, r.Ref, loc)
			}
			if err := mkdirInside(ctx, t, r.Dest); err != nil {
				return err
			}
			for _, m := range matches {
				if err := t.UploadDir(r.Dest, m+"/"); err != nil {
					return fmt.Errorf("source repository %s: %w", r.Name, err)
				}
			}
		case "git":
			if err := gitStage(ctx, loc, r.Ref, stage); err != nil {
				return fmt.Errorf("source repository %s: %w", r.Name, err)
			}
			if err := mkdirInside(ctx, t, r.Dest); err != nil {
				return err
			}
			if err := t.UploadDir(r.Dest, stage+"/"); err != nil {
				return fmt.Errorf("source repository %s: %w", r.Name, err)
			}
		default:
			return fmt.Errorf("source repository %s (element %s): type %s is not supported (file, tar and git are)", r.Name, r.Element, r.Type)
		}
		fmt.Fprintln(&list, r.Dest)
	}
	return t.Upload("/etc/dib-source-repositories", &list, 0o644)
}

func gitStage(ctx context.Context, loc, ref, stage string) error {
	run := func(dir string, args ...string) error {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := run("", "-c", "protocol.allow=never", "-c", "protocol.file.allow=always", "clone", "-q", "--no-hardlinks", loc, stage); err != nil {
		return err
	}
	if ref == "*" {
		return nil
	}
	if err := run(stage, "-c", "protocol.allow=never", "-c", "protocol.file.allow=always", "fetch", "-q", loc, ref+":fetch_"+ref); err != nil {
		return err
	}
	return run(stage, "reset", "-q", "--hard", "FETCH_HEAD")
}

func mkdirInside(ctx context.Context, t Target, dir string) error {
	var errb bytes.Buffer
	code, err := t.RunInside(ctx, "mkdir -p "+shellQuote(dir), io.Discard, &errb)
	if err != nil || code != 0 {
		return fmt.Errorf("mkdir -p %s in the image: exit %d %v %s", dir, code, err, errb.String())
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
