// Package btrfs reads what a disk image's btrfs filesystem holds: its
// subvolumes, its default subvolume (the one a mount without subvol= or
// subvolid= gets), and which subvolume an fstab entry names. It asks
// btrfs-progs, the standard tools, on a mount of the filesystem's top level.
package btrfs

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path"
	"strconv"
	"strings"
)

// TopLevelID is the ID of the top-level subvolume, the one mkfs.btrfs
// makes (BTRFS_FS_TREE_OBJECTID, 5, in btrfs-progs' kernel-shared/ctree.h).
const TopLevelID = 5

// Subvolume is one subvolume of a filesystem.
type Subvolume struct {
	ID       uint64
	ParentID uint64 // the subvolume it sits in ("top level" in btrfs subvolume list); 0 for the top level
	Path     string // from the top level, without a leading slash: "@/home"; "" for the top level
}

// TopLevel is the top-level subvolume.
var TopLevel = Subvolume{ID: TopLevelID}

func (s Subvolume) String() string {
	if s.ID == TopLevelID {
		return "the top level (ID 5)"
	}
	return fmt.Sprintf("%s (ID %d)", s.Path, s.ID)
}

// MountData is the mount(2) data that mounts s: "subvolid=N". The ID,
// unlike a path, cannot hold the comma that separates mount options.
func (s Subvolume) MountData() string { return fmt.Sprintf("subvolid=%d", s.ID) }

// List lists the subvolumes of the btrfs filesystem whose top level
// (subvolid=5) is mounted at top, in btrfs subvolume list's order (by ID),
// without the top level itself. Paths are relative to the top level.
func List(ctx context.Context, top string) ([]Subvolume, error) {
	out, err := run(ctx, "btrfs", "subvolume", "list", top)
	if err != nil {
		return nil, err
	}
	return parseList(out)
}

// parseList reads the lines of `btrfs subvolume list` (btrfs-progs
// cmds/subvolume-list.c, the default columns): "ID 256 gen 7 top level 5
// path @/home". The path is the rest of the line and may hold spaces.
func parseList(out string) ([]Subvolume, error) {
	var subs []Subvolume
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		s, err := parseLine(line)
		if err != nil {
			return nil, err
		}
		subs = append(subs, s)
	}
	return subs, nil
}

func parseLine(line string) (Subvolume, error) {
	head, p, ok := strings.Cut(line, " path ")
	f := strings.Fields(head)
	// ID N gen G top level P
	if !ok || len(f) != 7 || f[0] != "ID" || f[2] != "gen" || f[4] != "top" || f[5] != "level" {
		return Subvolume{}, fmt.Errorf("btrfs subvolume list: unexpected line %q", line)
	}
	id, err1 := strconv.ParseUint(f[1], 10, 64)
	parent, err2 := strconv.ParseUint(f[6], 10, 64)
	if err1 != nil || err2 != nil {
		return Subvolume{}, fmt.Errorf("btrfs subvolume list: unexpected numbers in %q", line)
	}
	// With -a, paths outside the mounted subvolume start with <FS_TREE>/.
	p = strings.TrimPrefix(p, "<FS_TREE>/")
	return Subvolume{ID: id, ParentID: parent, Path: p}, nil
}

// Default is the default subvolume of the btrfs filesystem mounted at mnt
// (btrfs subvolume get-default): TopLevel unless someone ran set-default.
func Default(ctx context.Context, mnt string) (Subvolume, error) {
	out, err := run(ctx, "btrfs", "subvolume", "get-default", mnt)
	if err != nil {
		return Subvolume{}, err
	}
	return parseDefault(out)
}

// parseDefault reads get-default's one line: "ID 5 (FS_TREE)" for the top
// level, else a line of the list's format.
func parseDefault(out string) (Subvolume, error) {
	line := strings.TrimSpace(out)
	if f := strings.Fields(line); len(f) >= 2 && f[0] == "ID" && f[1] == strconv.Itoa(TopLevelID) && !strings.Contains(line, " path ") {
		return TopLevel, nil
	}
	return parseLine(line)
}

// Named finds the subvolume an fstab entry's options name: subvolid=N,
// else subvol=PATH (relative to the top level, with or without a leading
// slash, as mount(8) takes it). ok is false when the options name none;
// an error when they name one the filesystem does not have. The top level
// is subvolid=5 or subvol=/.
func Named(options []string, subvols []Subvolume) (s Subvolume, ok bool, err error) {
	var byPath, byID string
	for _, o := range options {
		name, val, _ := strings.Cut(o, "=")
		switch name {
		case "subvol":
			byPath = val
		case "subvolid":
			byID = val
		}
	}
	all := append([]Subvolume{TopLevel}, subvols...)
	if byID != "" {
		id, err := strconv.ParseUint(byID, 10, 64)
		if err != nil {
			return Subvolume{}, false, fmt.Errorf("subvolid=%s is not a number", byID)
		}
		for _, s := range all {
			if s.ID == id {
				return s, true, nil
			}
		}
		return Subvolume{}, false, fmt.Errorf("subvolid=%d: the filesystem has no such subvolume", id)
	}
	if byPath != "" {
		want := strings.TrimPrefix(path.Clean("/"+byPath), "/")
		for _, s := range all {
			if s.Path == want {
				return s, true, nil
			}
		}
		return Subvolume{}, false, fmt.Errorf("subvol=%s: the filesystem has no such subvolume", byPath)
	}
	return Subvolume{}, false, nil
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
