package scrub

import (
	"errors"
	"fmt"
	"strings"
)

// The template's hostname. Setting /etc/hostname alone leaves the name in
// /etc/hosts (Debian's installer writes "127.0.1.1 FQDN SHORT" there), so
// every clone still resolves to the template's name: the half-clean
// libguestfs users met (virt-customize's hostname.ml rewrites /etc/hosts
// only on Debian, and only names equal to /etc/hostname's, missing the
// FQDN when /etc/hostname holds the short name). Here the old names are
// read first, from every file that holds the system's name, and every
// known file that names them gets the new one. Names match as whole words,
// case-insensitively: "tmpl-build-01" never rewrites "tmpl-build-010".

// hostnameFiles hold nothing but the system's name: /etc/hostname
// (hostname(5)), /etc/HOSTNAME (SUSE).
var hostnameFiles = []string{"/etc/hostname", "/etc/HOSTNAME"}

// cloudCfgGlobs are cloud-init's configuration (cloud-init: base config).
var cloudCfgGlobs = []string{"/etc/cloud/cloud.cfg", "/etc/cloud/cloud.cfg.d/*.cfg"}

func hostnameOp() Operation {
	return Operation{
		Name: "hostname",
		Description: "Give the image a new hostname, `localhost` or the `hostname` option, everywhere it names the old one. " +
			"The old names are read first from `/etc/hostname`, `/etc/HOSTNAME` (SUSE), `HOSTNAME=` in `/etc/sysconfig/network` " +
			"and `PRETTY_HOSTNAME=` in `/etc/machine-info`, with each name's short form, plus every name on the `127.0.1.1` line " +
			"of `/etc/hosts` (Debian keeps it for the system's own name) and every FQDN there whose first label is one of them. Then `/etc/hostname` is written (and `/etc/HOSTNAME` where it exists); in `/etc/hosts` " +
			"(other lines kept; a name left twice on a line once), `/etc/mailname`, `/etc/postfix/main.cf` and " +
			"`/etc/sysconfig/network` an old FQDN becomes the new name and an old short name the new short name, as whole words. " +
			"Keys whose value is one of the old names (`PRETTY_HOSTNAME=`, ifcfg `HOSTNAME=`/`DHCP_HOSTNAME=`, cloud-init's top-level " +
			"`hostname:`/`fqdn:`) are rewritten when the `hostname` option is set, removed otherwise (net-hostname removes the " +
			"ifcfg ones anyway, as virt-sysprep does). Where the image has cloud-init, it names each clone from its metadata at " +
			"first boot unless `preserve_hostname: true`; then the name written here stays. SSH host public keys, whose " +
			"comments name the host, go with ssh-hostkeys.",
		Default: true,
		Run: func(c *Context) error {
			name := c.Options.Hostname
			if name == "" {
				name = "localhost"
			}
			if err := CheckHostname(name); err != nil {
				return err
			}
			return c.renameHost(name, c.Options.Hostname != "")
		},
	}
}

// CheckHostname tells whether s can be the image's hostname (hostname(7):
// letters, digits and hyphens, dot-separated labels, at most 253
// characters), with an error naming s.
func CheckHostname(s string) error {
	if !validHostname(s) {
		return fmt.Errorf("hostname %q: use letters, digits, hyphens and dots only (a name such as web1 or web1.example.org)", s)
	}
	return nil
}

func validHostname(s string) bool {
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "-") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

func shortName(s string) string { short, _, _ := strings.Cut(s, "."); return short }

// isHostChar: the characters of a hostname token (underscore too, so that
// "tmpl-build-01_x" is another word).
func isHostChar(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '.' || b == '_'
}

// replaceNames replaces every whole-word occurrence of a key of repl
// (lower case; a trailing root dot allowed) in s.
func replaceNames(s string, repl map[string]string) (string, bool) {
	var b strings.Builder
	changed := false
	for i := 0; i < len(s); {
		if !isHostChar(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && isHostChar(s[j]) {
			j++
		}
		tok := s[i:j]
		dot := ""
		key := strings.ToLower(tok)
		if strings.HasSuffix(key, ".") {
			key, dot = strings.TrimSuffix(key, "."), "."
		}
		if r, ok := repl[key]; ok && r+dot != tok {
			b.WriteString(r + dot)
			changed = true
		} else {
			b.WriteString(tok)
		}
		i = j
	}
	return b.String(), changed
}

// shellValue is a KEY=value line's value without its quotes.
func shellValue(v string) string { return strings.Trim(strings.TrimSpace(v), `"'`) }

// oldHostnames reads the names the template calls itself (lower case).
func (c *Context) oldHostnames() map[string]bool {
	old := map[string]bool{}
	add := func(n string) {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if !validHostname(n) || shortName(n) == "localhost" {
			return
		}
		old[n] = true
		old[shortName(n)] = true
	}
	for _, p := range hostnameFiles {
		if data, _, ok, _ := c.regularFile(p); ok {
			for _, l := range strings.Split(string(data), "\n") {
				if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
					add(f[0])
					break
				}
			}
		}
	}
	for p, key := range map[string]string{"/etc/sysconfig/network": "HOSTNAME", "/etc/machine-info": "PRETTY_HOSTNAME"} {
		if data, _, ok, _ := c.regularFile(p); ok {
			for _, l := range strings.Split(string(data), "\n") {
				if k, v, ok := keyValue(l); ok && k == key {
					add(shellValue(v))
				}
			}
		}
	}
	// In /etc/hosts: every name on the 127.0.1.1 line, which Debian keeps
	// for the system's own name (Debian Reference, 5.1.1 "The hostname
	// resolution"), even when /etc/hostname was changed without it; and the
	// FQDNs of the short names above (Debian's installer writes the short
	// name to /etc/hostname, the FQDN only to /etc/hosts).
	if data, _, ok, _ := c.regularFile("/etc/hosts"); ok {
		var lines [][]string
		for _, l := range strings.Split(string(data), "\n") {
			l, _, _ = strings.Cut(l, "#")
			if f := strings.Fields(l); len(f) > 1 {
				lines = append(lines, f)
			}
		}
		for _, f := range lines {
			if f[0] == "127.0.1.1" {
				for _, n := range f[1:] {
					add(n)
				}
			}
		}
		for _, f := range lines {
			for _, n := range f[1:] {
				if n = strings.ToLower(n); strings.Contains(n, ".") && old[shortName(n)] {
					add(n)
				}
			}
		}
	}
	return old
}

// renameHost gives every known file that names the template's hostname the
// new name (see hostnameOp). explicit tells whether the user chose name.
func (c *Context) renameHost(name string, explicit bool) error {
	old := c.oldHostnames()
	repl := map[string]string{}
	for n := range old {
		if strings.Contains(n, ".") {
			repl[n] = name
		} else {
			repl[n] = shortName(name)
		}
	}
	for n, r := range repl {
		if n == strings.ToLower(r) {
			delete(repl, n) // already the new name
		}
	}
	var errs []error
	for i, p := range hostnameFiles {
		data, perm, ok, err := c.regularFile(p)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok && string(data) == name+"\n":
		case ok:
			errs = append(errs, c.writeFile(p, []byte(name+"\n"), perm))
		case i == 0: // /etc/hostname is made when missing; /etc/HOSTNAME only kept up to date
			errs = append(errs, c.writeFile(p, []byte(name+"\n"), 0o644))
		}
	}
	if len(repl) == 0 {
		return errors.Join(errs...)
	}
	byWord := func(s string) (string, bool, error) {
		out, changed := replaceNames(s, repl)
		return out, changed, nil
	}
	errs = append(errs,
		c.editFile("/etc/hosts", func(s string) (string, bool, error) { return editHosts(s, repl) }),
		c.editFile("/etc/mailname", byWord),
		c.editFile("/etc/postfix/main.cf", byWord),
		c.editFile("/etc/sysconfig/network", byWord))
	// Keys that only name the host: rewritten, or removed when no name was
	// chosen (DHCP_HOSTNAME=localhost would announce "localhost").
	namesOld := func(v string) bool { return repl[strings.ToLower(strings.TrimSuffix(shellValue(v), "."))] != "" }
	nameKeys := func(keys ...string) func(string) (string, bool, error) {
		return func(s string) (string, bool, error) {
			var out strings.Builder
			changed := false
			for _, l := range strings.SplitAfter(s, "\n") {
				k, v, ok := keyValue(l)
				if !ok && len(keys) > 0 && strings.HasSuffix(keys[0], ":") { // YAML: top-level "key: value"
					k, v, ok = yamlTopKey(l)
				}
				if ok && containsStr(keys, k) && namesOld(v) {
					changed = true
					if !explicit {
						continue
					}
					l, _ = replaceNames(l, repl)
				}
				out.WriteString(l)
			}
			return out.String(), changed, nil
		}
	}
	errs = append(errs,
		c.editFile("/etc/machine-info", nameKeys("PRETTY_HOSTNAME")),
		c.editGlobs(func(_, s string) (string, bool, error) { return nameKeys("HOSTNAME", "DHCP_HOSTNAME")(s) }, ifcfgGlob),
		c.editGlobs(func(_, s string) (string, bool, error) { return nameKeys("hostname:", "fqdn:")(s) }, cloudCfgGlobs...))
	return errors.Join(errs...)
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// yamlTopKey splits an unindented "key: value" line; the key keeps its colon.
func yamlTopKey(l string) (key, value string, ok bool) {
	if l == "" || l[0] == ' ' || l[0] == '\t' || l[0] == '#' {
		return "", "", false
	}
	k, v, ok := strings.Cut(strings.TrimRight(l, "\r\n"), ":")
	if !ok {
		return "", "", false
	}
	v, _, _ = strings.Cut(v, " #")
	return k + ":", strings.TrimSpace(v), true
}

// editHosts renames the old names in /etc/hosts (hosts(5): address, then
// canonical name and aliases) and drops a name a line then holds twice.
func editHosts(s string, repl map[string]string) (string, bool, error) {
	var out strings.Builder
	changed := false
	for _, l := range strings.SplitAfter(s, "\n") {
		nl, ch := replaceNames(l, repl)
		if ch {
			changed = true
			body, comment, hasComment := strings.Cut(strings.TrimSuffix(nl, "\n"), "#")
			f := strings.Fields(body)
			if len(f) > 2 {
				seen := map[string]bool{}
				names := []string{}
				for _, n := range f[1:] {
					if !seen[strings.ToLower(n)] {
						seen[strings.ToLower(n)] = true
						names = append(names, n)
					}
				}
				if len(names) < len(f)-1 {
					nl = f[0] + "\t" + strings.Join(names, " ")
					if hasComment {
						nl += " #" + comment
					}
					if strings.HasSuffix(l, "\n") {
						nl += "\n"
					}
				}
			}
		}
		out.WriteString(nl)
	}
	return out.String(), changed, nil
}
