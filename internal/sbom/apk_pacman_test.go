package sbom

import (
	"slices"
	"strings"
	"testing"
)

// alpineInstalled is an excerpt of Alpine 3.19's /lib/apk/db/installed
// (apk-tools 2.14): checksums shortened, file lists kept in shape.
const alpineInstalled = `C:Q1Ai7a8MlO3T0TTjIcmgK4ODbsb0s=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407278
I:667648
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1705943640
c:f9ea96ee3f5ff4cb38e8ea0af8e8f3d4d5bd6b15
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1Dn4e1OaMm8pBq6QqbZlljH8zx7E=
R:libc.musl-x86_64.so.1

C:Q1Lh0ld4w8PUdJqbhiMJ0XCWCOGdU=
P:ssl_client
V:1.36.1-r15
A:x86_64
S:4701
I:14336
T:EXternal ssl_client for busybox wget
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1705943560
c:2a5b6d4c7e58ad8a8d9e7cd0c0e2b1a5f7d7c0d1
D:so:libc.musl-x86_64.so.1 so:libcrypto.so.3 so:libssl.so.3
i:busybox=1.36.1-r15 libssl3
F:usr
F:usr/bin
R:ssl_client
a:0:0:755
Z:Q1VKHW4nm7jTsgcw+JmN7/dMixQXI=

C:Q1x2TnPCf6c5iQk79cCWF5Rh0mgG8=
P:alpine-baselayout-data
V:3.4.3-r2
A:x86_64
L:GPL-2.0-only
o:alpine-baselayout
r:alpine-baselayout
F:etc
R:fstab

`

const alpineOSRelease = `NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME="Alpine Linux v3.19"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
`

// Arch Linux's local database: a directory per package with its desc, as
// pacman 6.1 writes it (lib/libalpm/be_local.c, local_db_write).
var archFiles = map[string]string{
	"etc/os-release":                       "NAME=\"Arch Linux\"\nPRETTY_NAME=\"Arch Linux\"\nID=arch\nBUILD_ID=rolling\n",
	"var/lib/pacman/local/ALPM_DB_VERSION": "9\n",
	"var/lib/pacman/local/pacman-6.1.0-3/desc": "%NAME%\npacman\n\n%VERSION%\n6.1.0-3\n\n%BASE%\npacman\n\n%DESC%\nA library-based package manager with dependency support\n\n" +
		"%URL%\nhttps://www.archlinux.org/pacman/\n\n%ARCH%\nx86_64\n\n%BUILDDATE%\n1709130493\n\n%INSTALLDATE%\n1710000000\n\n%PACKAGER%\nMorten Linderud <foxboron@archlinux.org>\n\n" +
		"%SIZE%\n4788254\n\n%LICENSE%\nGPL-2.0-or-later\n\n%VALIDATION%\npgp\n\n%DEPENDS%\nbash\nglibc\n\n",
	"var/lib/pacman/local/systemd-libs-255.4-2/desc": "%NAME%\nsystemd-libs\n\n%VERSION%\n255.4-2\n\n%BASE%\nsystemd\n\n%ARCH%\nx86_64\n\n%LICENSE%\nLGPL-2.1-or-later\nCC0-1.0\n\n",
	"var/lib/pacman/local/iana-etc-20240305-1/desc":  "%NAME%\niana-etc\n\n%VERSION%\n20240305-1\n\n%BASE%\niana-etc\n\n%ARCH%\nany\n\n%LICENSE%\ncustom:none\n\n",
	"var/lib/pacman/local/linux-6.8.1.arch1-1/desc":  "%NAME%\nlinux\n\n%VERSION%\n1:6.8.1.arch1-1\n\n%ARCH%\nx86_64\n\n",
}

func TestApk(t *testing.T) {
	for _, tc := range []struct {
		name, db   string
		want       []string
		incomplete string
	}{
		{"alpine 3.19", alpineInstalled, []string{"alpine-baselayout-data 3.4.3-r2 x86_64", "musl 1.2.4_git20230717-r4 x86_64", "ssl_client 1.36.1-r15 x86_64"}, ""},
		{"truncated", alpineInstalled[:strings.Index(alpineInstalled, "P:alpine-baselayout-data")+5], []string{"musl 1.2.4_git20230717-r4 x86_64", "ssl_client 1.36.1-r15 x86_64"}, "truncated"},
		{"garbage line", "P:x\nV:1\ngarbage\n\n" + alpineInstalled, []string{"alpine-baselayout-data 3.4.3-r2 x86_64", "musl 1.2.4_git20230717-r4 x86_64", "ssl_client 1.36.1-r15 x86_64"}, "not a field"},
		{"no version", "P:x\nA:x86_64\n\n", nil, "without P: or V:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv := mustRead(t, writeTree(t, map[string]string{apkInstalled: tc.db, "etc/os-release": alpineOSRelease}))
			if got := lines(inv, Apk); !slices.Equal(got, tc.want) {
				t.Errorf("packages %q, want %q", got, tc.want)
			}
			if tc.incomplete == "" && len(inv.Incomplete) > 0 || tc.incomplete != "" && (len(inv.Incomplete) != 1 || !strings.HasPrefix(inv.Incomplete[0], apkInstalled+": ") || !strings.Contains(inv.Incomplete[0], tc.incomplete)) {
				t.Errorf("Incomplete %q, want %q", inv.Incomplete, tc.incomplete)
			}
			if tc.name != "alpine 3.19" {
				return
			}
			for _, p := range inv.Packages {
				if p.Name == "ssl_client" && (p.Source != "busybox" || p.License != "GPL-2.0-only" || p.Supplier != "Sören Tempel <soeren+alpine@soeren-tempel.net>") {
					t.Errorf("ssl_client %+v", p)
				}
			}
			if inv.OS.ID != "alpine" || inv.OS.VersionID != "3.19.1" || inv.OS.Name != "Alpine Linux" {
				t.Errorf("OS %+v", inv.OS)
			}
			b, err := inv.SPDX("alpine", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range readSPDX(t, b).Packages {
				if p.PackageName == "ssl_client" {
					if l := p.PackageExternalReferences[0].Locator; l != "pkg:apk/alpine/ssl_client@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1" {
						t.Errorf("purl %s", l)
					}
					if p.PackageLicenseDeclared != "GPL-2.0-only" || p.PackageSourceInfo != "built from source package busybox" {
						t.Errorf("ssl_client license %q source %q", p.PackageLicenseDeclared, p.PackageSourceInfo)
					}
				}
			}
		})
	}
}

func TestPacman(t *testing.T) {
	inv := mustRead(t, writeTree(t, archFiles))
	want := []string{"iana-etc 20240305-1 any", "linux 1:6.8.1.arch1-1 x86_64", "pacman 6.1.0-3 x86_64", "systemd-libs 255.4-2 x86_64"}
	if got := lines(inv, Pacman); !slices.Equal(got, want) || len(inv.Incomplete) != 0 {
		t.Fatalf("packages %q (incomplete %q), want %q", got, inv.Incomplete, want)
	}
	if p := inv.Packages[slices.IndexFunc(inv.Packages, func(p Package) bool { return p.Name == "pacman" })]; p.Supplier != "Morten Linderud <foxboron@archlinux.org>" || p.Source != "pacman" {
		t.Errorf("pacman %+v", p)
	}
	if inv.OS.ID != "arch" || inv.OS.VersionID != "" {
		t.Errorf("OS %+v", inv.OS)
	}
	b, err := inv.SPDX("arch", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range readSPDX(t, b).Packages {
		var purl string
		if len(p.PackageExternalReferences) > 0 {
			purl = p.PackageExternalReferences[0].Locator
		}
		got := []string{p.PackageLicenseDeclared, p.PackageLicenseComments, p.PackageSourceInfo, purl}
		var want []string
		switch p.PackageName {
		case "systemd-libs":
			want = []string{"LGPL-2.1-or-later AND CC0-1.0", "", "built from source package systemd", "pkg:alpm/arch/systemd-libs@255.4-2?arch=x86_64&distro=arch"}
		case "iana-etc":
			want = []string{"NOASSERTION", "license as the pacman database holds it: custom:none", "built from source package iana-etc", "pkg:alpm/arch/iana-etc@20240305-1?arch=any&distro=arch"}
		case "linux":
			want = []string{"NOASSERTION", "", "", "pkg:alpm/arch/linux@1:6.8.1.arch1-1?arch=x86_64&distro=arch"}
		default:
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", p.PackageName, got, want)
		}
	}
	// A package directory without its desc spoils that package only.
	files := map[string]string{"var/lib/pacman/local/broken-1-1/files": "%FILES%\n"}
	for k, v := range archFiles {
		files[k] = v
	}
	inv = mustRead(t, writeTree(t, files))
	if len(lines(inv, Pacman)) != 4 || len(inv.Incomplete) != 1 || !strings.HasPrefix(inv.Incomplete[0], pacmanLocal+": 1 package(s) skipped; "+pacmanLocal+"/broken-1-1/desc") {
		t.Errorf("broken: %q %q", lines(inv, Pacman), inv.Incomplete)
	}
}
