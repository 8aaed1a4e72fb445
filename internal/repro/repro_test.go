package repro

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	defer func(f func() time.Time) { timeNow = f }(timeNow)
	timeNow = func() time.Time { return time.Unix(1796083200, 0) } // 2026-12-01
	for _, c := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"0", 0, false},
		{"1767225600", 1767225600, false},
		{" 42\n", 42, false},
		{"", 0, true},
		{"-1", 0, true},
		{"1.5", 0, true},
		{"0x10", 0, true},
		{"2026-01-01", 0, true},
		{"99999999999999999999", 0, true},
		{"1893456000", 0, true}, // 2030-01-01: later than the clock below
	} {
		got, err := Parse(c.in)
		if c.bad {
			if !errors.Is(err, ErrBadEpoch) {
				t.Errorf("Parse(%q) = %d, %v; want ErrBadEpoch", c.in, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv(EnvVar, "")
	if _, ok, err := FromEnv(); ok || err != nil {
		t.Fatalf("empty: ok=%v err=%v; the spec reads an empty value as unset", ok, err)
	}
	t.Setenv(EnvVar, "1700000000")
	if e, ok, err := FromEnv(); !ok || err != nil || e != 1700000000 {
		t.Fatalf("FromEnv = %d %v %v", e, ok, err)
	}
	t.Setenv(EnvVar, "yesterday")
	if _, _, err := FromEnv(); !errors.Is(err, ErrBadEpoch) {
		t.Fatalf("bad value: %v", err)
	}
}

func TestDerived(t *testing.T) {
	a, b := New(1700000000, "build"), New(1700000000, "build")
	other, later := New(1700000000, "other"), New(1700000001, "build")
	if a.UUID("gpt/disk") != b.UUID("gpt/disk") || a.Uint32("mbr") != b.Uint32("mbr") {
		t.Fatal("same epoch and name gave different identifiers")
	}
	for name, s := range map[string]*Source{"name": other, "epoch": later} {
		if s.UUID("gpt/disk") == a.UUID("gpt/disk") {
			t.Errorf("another %s gave the same UUID", name)
		}
	}
	if a.UUID("gpt/disk") == a.UUID("gpt/part1") {
		t.Error("two purposes gave one UUID")
	}
	u := a.UUID("x")
	if u.Version() != 4 || u.Variant().String() != "RFC4122" {
		t.Errorf("UUID %s: version %d variant %s", u, u.Version(), u.Variant())
	}
	if len(a.Bytes("long", 100)) != 100 || string(a.Bytes("long", 100)[:32]) != string(a.Bytes("long", 40)[:32]) {
		t.Error("Bytes: wrong length or not a prefix-stable stream")
	}
	var nilSrc *Source
	if nilSrc.Enabled() || nilSrc.UUID("x") == nilSrc.UUID("x") || nilSrc.Env() != nil {
		t.Error("a nil Source must be random and add no environment")
	}
	if env := strings.Join(a.Env(), " "); env != "SOURCE_DATE_EPOCH=1700000000 E2FSPROGS_FAKE_TIME=1700000000 E2FSCK_TIME=1700000000" {
		t.Errorf("Env = %s", env)
	}
	if a.Time() != time.Unix(1700000000, 0).UTC() {
		t.Error("Time")
	}
	late := time.Unix(1800000000, 0)
	if !a.Clamp(late).Equal(a.Time()) || !a.Clamp(time.Unix(5, 0)).Equal(time.Unix(5, 0)) || !nilSrc.Clamp(late).Equal(late) {
		t.Error("Clamp")
	}
}
