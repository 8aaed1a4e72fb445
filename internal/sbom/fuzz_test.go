package sbom

import (
	"strings"
	"testing"
)

// FuzzParsers feeds the text parsers what a hostile or broken image could
// hold: none may panic, and a paragraph is either kept or reported.
func FuzzParsers(f *testing.F) {
	for _, s := range []string{statusOK, alpineInstalled, alpineOSRelease, archFiles["var/lib/pacman/local/pacman-6.1.0-3/desc"], "", "\n\n", " x\n", "P:\n", "%NAME%\n", "A=\"\\", "x='"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		paras := splitParagraphs(data)
		good, bad := parseDeb822(data)
		if len(good)+len(bad) != len(paras) {
			t.Errorf("deb822: %d kept + %d skipped of %d paragraphs", len(good), len(bad), len(paras))
		}
		pkgs, problems := parseApk(data)
		if len(pkgs)+len(problems) != len(paras) {
			t.Errorf("apk: %d kept + %d skipped of %d paragraphs", len(pkgs), len(problems), len(paras))
		}
		for _, p := range pkgs {
			if p.Name == "" || p.Version == "" || strings.Contains(p.Name, "\n") {
				t.Errorf("apk package %+v", p)
			}
		}
		parseDesc(data)
		parseOSRelease(string(data))
	})
}
