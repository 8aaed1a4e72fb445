package fstab

import (
	"reflect"
	"strings"
	"testing"
)

// Real-world fstabs, as shipped in cloud images.
const debian12Genericcloud = `# /etc/fstab: static file system information.
UUID=8f1e4a1c-7fd4-4a5b-9c5f-0a3e6f0a1b2c / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1
UUID=A1B2-C3D4 /boot/efi vfat defaults 0 0
`

const ubuntu2204Cloudimg = `LABEL=cloudimg-rootfs	/	 ext4	discard,errors=remount-ro	0 1
LABEL=UEFI	/boot/efi	vfat	umask=0077	0 1
`

const debianInstaller = `# /etc/fstab: static file system information.
#
# Use 'blkid' to print the universally unique identifier for a
# device; this may be used with UUID= as a more robust way to name devices
# that works even if disks are added and removed. See fstab(5).
#
# systemd generates mount units based on this file, see systemd.mount(5).
# Please run 'systemctl daemon-reload' after making changes here.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
# / was on /dev/vda1 during installation
UUID=0b6d4a9e-4a7b-4a49-9f0e-1b4d3c2a1f00 /               ext4    errors=remount-ro 0       1
# /boot was on /dev/vda2 during installation
UUID=3c2d1e0f-aaaa-bbbb-cccc-ddddeeeeffff /boot           ext4    defaults        0       2
# swap was on /dev/vda5 during installation
UUID=11111111-2222-3333-4444-555555555555 none            swap    sw              0       0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
proc /proc proc defaults 0 0
tmpfs /tmp tmpfs nosuid,nodev 0 0
PARTUUID=6d8a1f2e-01 /srv xfs defaults,nofail 0 2
/dev/disk/by-label/my\x20data /data ext4 defaults 0 2
/dev/vdb1 /mnt/with\040space ext4 noatime 0 2
nas:/export /mnt/nas nfs4 _netdev,auto 0 0
/srv/a /srv/b none bind 0 0
PARTLABEL="EFI\040System" /efi vfat defaults
`

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Entry
	}{
		{"debian 12 genericcloud", debian12Genericcloud, []Entry{
			{Spec: "UUID=8f1e4a1c-7fd4-4a5b-9c5f-0a3e6f0a1b2c", File: "/", VFSType: "ext4", Options: []string{"rw", "discard", "errors=remount-ro", "x-systemd.growfs"}, Freq: 0, Pass: 1, Line: 2},
			{Spec: "UUID=A1B2-C3D4", File: "/boot/efi", VFSType: "vfat", Options: []string{"defaults"}, Line: 3},
		}},
		{"ubuntu 22.04 cloudimg with tabs", ubuntu2204Cloudimg, []Entry{
			{Spec: "LABEL=cloudimg-rootfs", File: "/", VFSType: "ext4", Options: []string{"discard", "errors=remount-ro"}, Pass: 1, Line: 1},
			{Spec: "LABEL=UEFI", File: "/boot/efi", VFSType: "vfat", Options: []string{"umask=0077"}, Pass: 1, Line: 2},
		}},
		{"short lines default type and options", "/dev/vda1 /\n\n   \n/dev/vda2 /boot ext4\n", []Entry{
			{Spec: "/dev/vda1", File: "/", VFSType: "auto", Options: []string{"defaults"}, Line: 1},
			{Spec: "/dev/vda2", File: "/boot", VFSType: "ext4", Options: []string{"defaults"}, Line: 4},
		}},
		{"octal escapes and trailing comment", `LABEL=a\040b /mnt/x\011y ext4 defaults 0 2 # data disk` + "\n", []Entry{
			{Spec: "LABEL=a b", File: "/mnt/x\ty", VFSType: "ext4", Options: []string{"defaults"}, Pass: 2, Line: 1},
		}},
		{"backslash not an escape", `/dev/x /mnt/a\b ext4 defaults`, []Entry{
			{Spec: "/dev/x", File: `/mnt/a\b`, VFSType: "ext4", Options: []string{"defaults"}, Line: 1},
		}},
		{"comments only", "# nothing\n#UUID=x / ext4 defaults 0 1\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"/dev/vda1\n",
		"/dev/vda1 / ext4 defaults 0 1 extra\n",
		"/dev/vda1 / ext4 defaults zero 1\n",
		"# ok\n/dev/vda1 / ext4 defaults 0 -1\n",
	} {
		_, err := Parse(strings.NewReader(in))
		if err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		} else if !strings.Contains(err.Error(), "line") {
			t.Errorf("error does not name the line: %v", err)
		}
	}
}

func TestSourceAndMountable(t *testing.T) {
	entries, err := Parse(strings.NewReader(debianInstaller))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		file, kind, value string
		mountable         bool
		reason            string // substring of NotMountableReason
	}
	want := []row{
		{"/", KindUUID, "0b6d4a9e-4a7b-4a49-9f0e-1b4d3c2a1f00", true, ""},
		{"/boot", KindUUID, "3c2d1e0f-aaaa-bbbb-cccc-ddddeeeeffff", true, ""},
		{"none", KindUUID, "11111111-2222-3333-4444-555555555555", false, "swap"},
		{"/media/cdrom0", KindPath, "/dev/sr0", false, "noauto"},
		{"/proc", KindOther, "proc", false, "proc"},
		{"/tmp", KindOther, "tmpfs", false, "tmpfs"},
		{"/srv", KindPartUUID, "6d8a1f2e-01", true, ""},
		{"/data", KindLabel, "my data", true, ""},
		{"/mnt/with space", KindPath, "/dev/vdb1", true, ""},
		{"/mnt/nas", KindOther, "nas:/export", false, "nfs4"},
		{"/srv/b", KindPath, "/srv/a", false, "not a disk"},
		{"/efi", KindPartLabel, "EFI System", true, ""},
	}
	if len(entries) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(entries), len(want), entries)
	}
	for i, w := range want {
		e := entries[i]
		kind, value := e.Source()
		if e.File != w.file || kind != w.kind || value != w.value || e.Mountable() != w.mountable {
			t.Errorf("entry %d (%s): file %q kind %q value %q mountable %v; want %+v", i, e, e.File, kind, value, e.Mountable(), w)
		}
		if r := e.NotMountableReason(); !strings.Contains(r, w.reason) || (w.reason == "" && r != "") {
			t.Errorf("entry %s: reason %q, want %q", e, r, w.reason)
		}
	}
}

func TestSourceKinds(t *testing.T) {
	tests := []struct{ spec, kind, value string }{
		{"UUID=abc", KindUUID, "abc"},
		{"uuid=abc", KindUUID, "abc"},
		{`UUID="abc"`, KindUUID, "abc"},
		{"LABEL=root", KindLabel, "root"},
		{"PARTUUID=1234-02", KindPartUUID, "1234-02"},
		{"PARTLABEL=rootfs", KindPartLabel, "rootfs"},
		{"/dev/sda1", KindPath, "/dev/sda1"},
		{"/dev/vda2", KindPath, "/dev/vda2"},
		{"/dev/nvme0n1p1", KindPath, "/dev/nvme0n1p1"},
		{"/dev/disk/by-uuid/8f1e-aa", KindUUID, "8f1e-aa"},
		{"/dev/disk/by-label/cloudimg-rootfs", KindLabel, "cloudimg-rootfs"},
		{`/dev/disk/by-label/a\x2fb`, KindLabel, "a/b"},
		{"/dev/disk/by-partuuid/6d8a1f2e-01", KindPartUUID, "6d8a1f2e-01"},
		{"/dev/disk/by-partlabel/esp", KindPartLabel, "esp"},
		{"/dev/disk/by-id/virtio-abc", KindPath, "/dev/disk/by-id/virtio-abc"},
		{"/dev/mapper/vg-root", KindPath, "/dev/mapper/vg-root"},
		{"tmpfs", KindOther, "tmpfs"},
		{"ID=abc", KindOther, "ID=abc"},
	}
	for _, tc := range tests {
		k, v := Entry{Spec: tc.spec}.Source()
		if k != tc.kind || v != tc.value {
			t.Errorf("Source(%q) = %q, %q; want %q, %q", tc.spec, k, v, tc.kind, tc.value)
		}
	}
}

func TestMountableAndDepth(t *testing.T) {
	tests := []struct {
		line      string
		mountable bool
		depth     int
	}{
		{"UUID=x / ext4 defaults 0 1", true, 0},
		{"UUID=x /boot ext4 defaults 0 2", true, 1},
		{"UUID=x /boot/efi vfat umask=0077 0 1", true, 2},
		{"UUID=x /home btrfs subvol=@home 0 0", true, 1},
		{"/swapfile none swap sw 0 0", false, 0},
		{"UUID=x /data ext4 noauto 0 0", false, 1},
		{"UUID=x /data ext4 _netdev 0 0", false, 1},
		{"UUID=x relative ext4 defaults 0 0", false, 0},
		{"UUID=x /a/../b ext4 defaults 0 0", false, 1},
		{"devpts /dev/pts devpts gid=5,mode=620 0 0", false, 2},
		{"sysfs /sys sysfs defaults 0 0", false, 1},
		{"server:/x /x fuse.sshfs defaults 0 0", false, 1},
		{"/a /b none bind 0 0", false, 1},
		{"/a /b ext4 bind 0 0", false, 1},
	}
	for _, tc := range tests {
		es, err := Parse(strings.NewReader(tc.line))
		if err != nil || len(es) != 1 {
			t.Fatalf("Parse(%q): %v %v", tc.line, es, err)
		}
		if got := es[0].Mountable(); got != tc.mountable {
			t.Errorf("%q: Mountable = %v (%s), want %v", tc.line, got, es[0].NotMountableReason(), tc.mountable)
		}
		if got := es[0].Depth(); tc.mountable && got != tc.depth {
			t.Errorf("%q: Depth = %d, want %d", tc.line, got, tc.depth)
		}
	}
	e := Entry{Options: []string{"defaults", "subvol=@home"}}
	if v, ok := e.Option("subvol"); !ok || v != "@home" {
		t.Errorf("Option(subvol) = %q, %v", v, ok)
	}
	if e.HasOption("sub") {
		t.Error("HasOption matched a prefix")
	}
}

func TestFixRoot(t *testing.T) {
	const uuid = "5b0b8f3c-4f5e-4a53-9d1a-3c9e2f0a7b11"
	ext4 := RootFS{UUID: uuid, Label: "cloudimg-rootfs", Type: "ext4", Spec: "LABEL=cloudimg-rootfs"}
	rest := "/dev/xvdb\t/mnt\tauto\tdefaults,nofail\t0\t2\n"
	for _, tc := range []struct {
		name, in   string
		r          RootFS
		want, said string
	}{
		{"by label, kept", "# AMI\nLABEL=cloudimg-rootfs / ext4 defaults,discard 0 1\n" + rest, ext4,
			"# AMI\nLABEL=cloudimg-rootfs / ext4 defaults,discard 0 1\n" + rest, ""},
		{"by UUID in capitals, kept", "UUID=" + strings.ToUpper(uuid) + "  /  ext4  defaults  0  1\n", ext4,
			"UUID=" + strings.ToUpper(uuid) + "  /  ext4  defaults  0  1\n", ""},
		{"by udev link, kept", "/dev/disk/by-uuid/" + uuid + " / ext4 defaults 0 1\n", ext4,
			"/dev/disk/by-uuid/" + uuid + " / ext4 defaults 0 1\n", ""},
		{"Xen device path replaced", "/dev/xvda1 / ext4 defaults,noatime 0 0 # root\n" + rest, ext4,
			"LABEL=cloudimg-rootfs\t/\text4\tdefaults,noatime\t0\t0\n" + rest, "line 1 (/): device /dev/xvda1 -> LABEL=cloudimg-rootfs"},
		{"another label replaced, ext3 becomes ext4", rest + "LABEL=/ / ext3 defaults 1 1\n", ext4,
			rest + "LABEL=cloudimg-rootfs\t/\text4\tdefaults\t1\t1\n", "line 2 (/): device LABEL=/ -> LABEL=cloudimg-rootfs, type ext3 -> ext4"},
		{"short line gets its type", "UUID=" + uuid + " /\n", ext4,
			"UUID=" + uuid + "\t/\text4\tdefaults\t0\t1\n", "line 1 (/): type auto -> ext4"},
		{"no / line", "proc /proc proc defaults 0 0", RootFS{UUID: uuid, Type: "xfs", Spec: "UUID=" + uuid},
			"proc /proc proc defaults 0 0\nUUID=" + uuid + "\t/\txfs\tdefaults\t0\t0\n", "no / line: added UUID=" + uuid + "\t/\txfs\tdefaults\t0\t0"},
		{"empty fstab", "", ext4, "LABEL=cloudimg-rootfs\t/\text4\tdefaults\t0\t1\n", "no / line: added LABEL=cloudimg-rootfs\t/\text4\tdefaults\t0\t1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, said, err := FixRoot(tc.in, tc.r)
			if err != nil || got != tc.want || said != tc.said {
				t.Errorf("FixRoot =\n%q, %q, %v\nwant\n%q, %q", got, said, err, tc.want, tc.said)
			}
		})
	}
	if _, _, err := FixRoot("/dev/sda1\n", ext4); err == nil {
		t.Error("FixRoot accepted a line without a mount point")
	}
}

func TestElsewhere(t *testing.T) {
	const uuid = "5b0b8f3c-4f5e-4a53-9d1a-3c9e2f0a7b11"
	r := RootFS{UUID: uuid, Label: "cloudimg-rootfs", Type: "ext4", Spec: "LABEL=cloudimg-rootfs"}
	text := "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n" +
		"/dev/xvdb /mnt auto defaults 0 2\n" + // waits: reported
		"/dev/xvdc /data ext4 defaults,nofail 0 2\n" +
		"/dev/xvdd /opt ext4 noauto 0 0\n" +
		"UUID=" + uuid + " /srv ext4 defaults 0 2\n" + // the root again: there
		"UUID=0000-1111 /boot/efi vfat umask=0077 0 1\n" + // waits: reported
		"/swapfile none swap sw 0 0\n" +
		"proc /proc proc defaults 0 0\n" +
		"tmpfs /tmp tmpfs defaults 0 0\n"
	got, err := Elsewhere(text, r)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range got {
		files = append(files, e.File)
	}
	if strings.Join(files, " ") != "/mnt /boot/efi" {
		t.Errorf("Elsewhere = %v, want /mnt and /boot/efi", files)
	}
}

// TestUnescape: fstab's and mountinfo's octal escapes; a backslash that
// starts no whole escape stays.
func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/t\011`: "/t\t", `/end\04`: `/end\04`, `/no\9ab`: `/no\9ab`} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
