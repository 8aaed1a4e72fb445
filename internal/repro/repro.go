// Package repro derives every identifier and timestamp a reproducible build
// makes from one value: SOURCE_DATE_EPOCH (seconds since 1970-01-01 UTC, as
// https://reproducible-builds.org/specs/source-date-epoch/ defines it) and the
// build's name, instead of from randomness or the clock.
//
// A nil *Source is "not reproducible": its UUIDs and numbers are random and
// its time is the clock's, so callers need no branch of their own.
package repro

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// EnvVar is the environment variable of the reproducible-builds.org
// convention.
const EnvVar = "SOURCE_DATE_EPOCH"

// StateKey is the key under which an artifact's State carries the epoch (an
// int64) to the post-processors after it.
const StateKey = "source_date_epoch"

// ErrBadEpoch is returned for a value that is not a non-negative decimal
// integer of seconds.
var ErrBadEpoch = errors.New("not a SOURCE_DATE_EPOCH")

// badEpoch is an ErrBadEpoch whose message says it all.
type badEpoch struct{ error }

func (badEpoch) Is(target error) bool { return target == ErrBadEpoch }

// Source derives identifiers for one build.
type Source struct {
	epoch int64
	key   [32]byte
}

// Parse reads an epoch as the specification has it: ASCII decimal digits
// only, the number of seconds since 1970-01-01 00:00:00 UTC, and not later
// than the clock: the specification's "last modification of something"
// (reproducible-builds.org/specs/source-date-epoch). A future epoch is
// refused because clamping, which makes the build's own times
// reproducible, only sets later times back. Errors wrap ErrBadEpoch.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%w: %q: give seconds since 1970-01-01 UTC, digits only (for example: date -d 2026-01-01 +%%s)", ErrBadEpoch, s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > 253402300799 { // 9999-12-31T23:59:59Z: what a 34-bit ext4 time and GPT tools still hold
		return 0, fmt.Errorf("%w: %q: out of range", ErrBadEpoch, s)
	}
	if now := timeNow(); n > now.Unix() {
		err := fmt.Errorf("%q (%s) is later than this machine's clock (%s): times the build writes (a mount's, a new file's) are set back to the epoch, never forward, so two builds would differ; give the time of the sources' last change, e.g. git log -1 --format=%%ct",
			s, time.Unix(n, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		return 0, badEpoch{err}
	}
	return n, nil
}

// timeNow is the clock Parse compares an epoch with (tests move it).
var timeNow = time.Now

// FromEnv reads SOURCE_DATE_EPOCH. ok is false when it is unset or empty
// (the specification says an empty value is unset).
func FromEnv() (epoch int64, ok bool, err error) {
	v := os.Getenv(EnvVar)
	if strings.TrimSpace(v) == "" {
		return 0, false, nil
	}
	epoch, err = Parse(v)
	if err != nil {
		return 0, false, fmt.Errorf("environment %s: %w", EnvVar, err)
	}
	return epoch, true, nil
}

// New returns the Source of a build: the same epoch and name give the same
// identifiers on every host, different names give different ones (two
// builds of one template must not share filesystem UUIDs).
func New(epoch int64, buildName string) *Source {
	s := &Source{epoch: epoch}
	s.key = sha256.Sum256([]byte(fmt.Sprintf("imagefactory repro v1\x00%d\x00%s", epoch, buildName)))
	return s
}

// Enabled reports whether the build is reproducible.
func (s *Source) Enabled() bool { return s != nil }

// Epoch is the build's time in seconds since the Unix epoch; for a nil
// Source, now.
func (s *Source) Epoch() int64 {
	if s == nil {
		return time.Now().Unix()
	}
	return s.epoch
}

// Time is Epoch as a UTC time.
func (s *Source) Time() time.Time {
	if s == nil {
		return time.Now().UTC()
	}
	return time.Unix(s.epoch, 0).UTC()
}

// Clamp returns t, or the epoch if t is later (the "clamp" of
// reproducible-builds.org: files older than the epoch keep their time).
// A nil Source returns t.
func (s *Source) Clamp(t time.Time) time.Time {
	if s == nil || !t.After(s.Time()) {
		return t
	}
	return s.Time()
}

// Bytes returns n bytes for purpose: HMAC-SHA256 of the purpose (and a
// counter) keyed by the build, or random bytes for a nil Source. Purposes
// name what the bytes become, for example "gpt/disk-guid" or
// "ext4/root/hash-seed"; one purpose must never serve two identifiers.
func (s *Source) Bytes(purpose string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	if s == nil {
		out = out[:n]
		if _, err := rand.Read(out); err != nil {
			panic(err) // crypto/rand never fails on Linux >= 3.17 (getrandom)
		}
		return out
	}
	for i := uint32(0); len(out) < n; i++ {
		m := hmac.New(sha256.New, s.key[:])
		var c [4]byte
		binary.BigEndian.PutUint32(c[:], i)
		m.Write(c[:])
		m.Write([]byte(purpose))
		out = m.Sum(out)
	}
	return out[:n]
}

// UUID returns a UUID for purpose, with the version and variant bits of an
// RFC 9562 version 4 UUID, so tools that check them (mkfs, sgdisk, systemd)
// take it as they take a random one.
func (s *Source) UUID(purpose string) uuid.UUID {
	var u uuid.UUID
	copy(u[:], s.Bytes(purpose, 16))
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // variant 10 (RFC 9562 section 4.1)
	return u
}

// Uint32 returns a number for purpose: an MBR disk signature, a FAT volume
// ID. Never 0, which both formats read as "none".
func (s *Source) Uint32(purpose string) uint32 {
	for i := 0; ; i++ {
		b := s.Bytes(fmt.Sprintf("%s#%d", purpose, i), 4)
		if v := binary.LittleEndian.Uint32(b); v != 0 {
			return v
		}
	}
}

// Env returns the variables that make child tools reproducible, to append
// to their environment: SOURCE_DATE_EPOCH (mtools, dosfstools, grub-mkimage
// readers of the convention), E2FSPROGS_FAKE_TIME (e2fsprogs' time for
// superblock and inode fields, lib/ext2fs and misc/mke2fs.c) and
// E2FSCK_TIME (e2fsck's own "now", e2fsck/e2fsck.c: in 1.47.0 e2fsck
// ignores E2FSPROGS_FAKE_TIME and writes the clock in s_lastcheck and
// s_wtime). Nil for a nil Source.
func (s *Source) Env() []string {
	if s == nil {
		return nil
	}
	e := strconv.FormatInt(s.epoch, 10)
	return []string{EnvVar + "=" + e, "E2FSPROGS_FAKE_TIME=" + e, "E2FSCK_TIME=" + e}
}
