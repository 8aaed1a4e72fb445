package ext4repro

import (
	"bytes"
	"testing"
)

// dirBlock lays out entries (inode, name, rec_len; rec_len 0 = minimal,
// the last one spans the rest) in a block of n bytes, with junk in every
// byte no entry uses.
func dirBlock(n int, es ...struct {
	ino  uint32
	name string
	rec  int
}) []byte {
	b := bytes.Repeat([]byte{0xA5}, n)
	off := 0
	for i, e := range es {
		rec := e.rec
		if rec == 0 {
			rec = (8 + len(e.name) + 3) &^ 3
		}
		if i == len(es)-1 {
			rec = n - off
		}
		put32(b, off, e.ino)
		put16(b, off+4, uint16(rec))
		b[off+6], b[off+7] = byte(len(e.name)), 1
		copy(b[off+8:], e.name)
		off += rec
	}
	return b
}

type ent = struct {
	ino  uint32
	name string
	rec  int
}

func TestPackDirBlock(t *testing.T) {
	for _, c := range []struct {
		name  string
		in    []byte
		first bool
		want  []byte // nil: not recognised, left as is
	}{
		{
			"holes of deleted names, unsorted",
			dirBlock(96, ent{2, ".", 0}, ent{2, "..", 24}, ent{12, "zeta", 0}, ent{0, "script_12.sh", 0}, ent{13, "alpha", 0}),
			true,
			dirBlock(96, ent{2, ".", 0}, ent{2, "..", 0}, ent{13, "alpha", 0}, ent{12, "zeta", 0}),
		},
		{
			"the same entries after another history",
			dirBlock(96, ent{2, ".", 0}, ent{2, "..", 0}, ent{13, "alpha", 36}, ent{12, "zeta", 0}),
			true,
			dirBlock(96, ent{2, ".", 0}, ent{2, "..", 0}, ent{13, "alpha", 0}, ent{12, "zeta", 0}),
		},
		{
			"a block with no live entry",
			dirBlock(32, ent{0, "gone", 0}),
			false,
			func() []byte { b := make([]byte, 32); put16(b, 4, 32); return b }(),
		},
		{"a first block without . and ..", dirBlock(32, ent{5, "x", 0}), true, nil},
		{"a rec_len past the end", func() []byte { b := dirBlock(32, ent{5, "x", 0}); put16(b, 4, 40); return b }(), false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := append([]byte(nil), c.in...)
			// packDirBlock zeroes the junk: compare with the expectation's junk zeroed too.
			ok := packDirBlock(b, c.first)
			if c.want == nil {
				if ok || !bytes.Equal(b, c.in) {
					t.Fatalf("an unrecognised block was changed (ok=%v)", ok)
				}
				return
			}
			want := append([]byte(nil), c.want...)
			if !packDirBlock(want, c.first) { // the expectation, junk cleared the same way
				t.Fatal("the expectation is not a directory block")
			}
			if !ok || !bytes.Equal(b, want) {
				t.Fatalf("got\n%x\nwant\n%x", b, want)
			}
			if bytes.IndexByte(b, 0xA5) >= 0 {
				t.Errorf("junk left: %x", b)
			}
		})
	}
}

func TestClearExtentSlack(t *testing.T) {
	node := bytes.Repeat([]byte{0xA5}, 60)
	put16(node, 0, extentMagic)
	put16(node, 2, 1) // entries
	put16(node, 4, 4) // max
	if !clearExtentSlack(node) || !bytes.Equal(node[24:], make([]byte, 36)) || node[12] != 0xA5 {
		t.Fatalf("slack after the one entry not cleared, or the entry touched: %x", node)
	}
	if clearExtentSlack(node) {
		t.Error("a clean node reported a change")
	}
	if clearExtentSlack(make([]byte, 60)) {
		t.Error("not an extent node, yet changed")
	}
}
