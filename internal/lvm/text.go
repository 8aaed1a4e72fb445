package lvm

import (
	"fmt"
	"strconv"
	"strings"
)

// The LVM2 text metadata format (LVM2 lib/config/config.c and
// libdm/libdm-config.c, the parser; lib/format_text/export.c, the writer):
// nested `name { ... }` sections and `key = value` items, where a value is an
// integer, a float, a "string" (\" and \\ escaped) or a [list] of those;
// `#` starts a comment that runs to the end of the line.

// Node is one item of a section: a value (Section nil) or a subsection.
type Node struct {
	Key     string
	Value   Value    // when Section is nil
	Section *Section // a nested `Key { ... }`
}

// Section is an ordered list of items; order is kept so a rewrite reads
// like the original.
type Section struct {
	Items []*Node
}

// Value is an integer, a float (kept as its text), a string or a list.
type Value struct {
	Kind  ValueKind
	Int   int64
	Str   string // the string, or a float's text
	Items []Value
}

// ValueKind says which field of a Value holds it.
type ValueKind int

// The kinds of values.
const (
	KindInt ValueKind = iota
	KindFloat
	KindString
	KindList
)

// Sub returns the subsection named key, or nil.
func (s *Section) Sub(key string) *Section {
	for _, n := range s.Items {
		if n.Key == key && n.Section != nil {
			return n.Section
		}
	}
	return nil
}

// Get returns the value of key, if it is a value.
func (s *Section) Get(key string) (Value, bool) {
	for _, n := range s.Items {
		if n.Key == key && n.Section == nil {
			return n.Value, true
		}
	}
	return Value{}, false
}

// Int returns the integer value of key; ok is false if it is missing or
// not an integer.
func (s *Section) Int(key string) (int64, bool) {
	v, ok := s.Get(key)
	if !ok || v.Kind != KindInt {
		return 0, false
	}
	return v.Int, true
}

// String returns the string value of key, or "".
func (s *Section) String(key string) string {
	v, _ := s.Get(key)
	if v.Kind != KindString {
		return ""
	}
	return v.Str
}

// Strings returns the strings of a list value (status, flags), skipping
// other items.
func (s *Section) Strings(key string) []string {
	v, _ := s.Get(key)
	var out []string
	for _, it := range v.Items {
		if it.Kind == KindString {
			out = append(out, it.Str)
		}
	}
	return out
}

// SetInt sets key to an integer, replacing its value or appending it.
func (s *Section) SetInt(key string, n int64) {
	for _, it := range s.Items {
		if it.Key == key && it.Section == nil {
			it.Value = Value{Kind: KindInt, Int: n}
			return
		}
	}
	s.Items = append(s.Items, &Node{Key: key, Value: Value{Kind: KindInt, Int: n}})
}

// Subsections returns the nested sections, in order.
func (s *Section) Subsections() []*Node {
	var out []*Node
	for _, n := range s.Items {
		if n.Section != nil {
			out = append(out, n)
		}
	}
	return out
}

// ParseText parses LVM2 metadata text (what lies in a metadata area, or in
// /etc/lvm/backup). A trailing NUL, as stored on disk, ends the text.
func ParseText(text []byte) (*Section, error) {
	if i := strings.IndexByte(string(text), 0); i >= 0 {
		text = text[:i]
	}
	p := &parser{src: string(text), line: 1}
	root, err := p.section(true)
	if err != nil {
		return nil, fmt.Errorf("LVM metadata line %d: %w", p.line, err)
	}
	return root, nil
}

type parser struct {
	src  string
	pos  int
	line int
}

// skip passes blanks and comments.
func (p *parser) skip() {
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == '\n':
			p.line++
			p.pos++
		case c == ' ' || c == '\t' || c == '\r':
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

// isNameChar: section and key names (VG, LV and PV names take letters,
// digits and "+_.-", LVM2 lib/misc/lvm-string.c validate_name).
func isNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '+' || c == '.' || c == '-'
}

func (p *parser) name() string {
	start := p.pos
	for p.pos < len(p.src) && isNameChar(p.src[p.pos]) {
		p.pos++
	}
	return p.src[start:p.pos]
}

func (p *parser) section(top bool) (*Section, error) {
	s := &Section{}
	for {
		p.skip()
		if p.pos >= len(p.src) {
			if top {
				return s, nil
			}
			return nil, fmt.Errorf("unexpected end of text: a section is not closed")
		}
		if p.src[p.pos] == '}' {
			if top {
				return nil, fmt.Errorf("unexpected '}'")
			}
			p.pos++
			return s, nil
		}
		key := p.name()
		if key == "" {
			return nil, fmt.Errorf("unexpected %q where a name was expected", p.src[p.pos])
		}
		p.skip()
		if p.pos >= len(p.src) {
			return nil, fmt.Errorf("unexpected end of text after %q", key)
		}
		switch p.src[p.pos] {
		case '{':
			p.pos++
			sub, err := p.section(false)
			if err != nil {
				return nil, err
			}
			s.Items = append(s.Items, &Node{Key: key, Section: sub})
		case '=':
			p.pos++
			v, err := p.value(true)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			s.Items = append(s.Items, &Node{Key: key, Value: v})
		default:
			return nil, fmt.Errorf("unexpected %q after %q", p.src[p.pos], key)
		}
	}
}

func (p *parser) value(listOK bool) (Value, error) {
	p.skip()
	if p.pos >= len(p.src) {
		return Value{}, fmt.Errorf("missing value")
	}
	switch c := p.src[p.pos]; {
	case c == '"':
		return p.str()
	case c == '[' && listOK:
		p.pos++
		v := Value{Kind: KindList}
		for {
			p.skip()
			if p.pos < len(p.src) && p.src[p.pos] == ']' {
				p.pos++
				return v, nil
			}
			it, err := p.value(false)
			if err != nil {
				return Value{}, err
			}
			v.Items = append(v.Items, it)
			p.skip()
			if p.pos < len(p.src) && p.src[p.pos] == ',' {
				p.pos++
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		start := p.pos
		p.pos++
		for p.pos < len(p.src) && (p.src[p.pos] >= '0' && p.src[p.pos] <= '9' || p.src[p.pos] == '.') {
			p.pos++
		}
		text := p.src[start:p.pos]
		if strings.Contains(text, ".") {
			if _, err := strconv.ParseFloat(text, 64); err != nil {
				return Value{}, fmt.Errorf("bad number %q", text)
			}
			return Value{Kind: KindFloat, Str: text}, nil
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return Value{}, fmt.Errorf("bad number %q", text)
		}
		return Value{Kind: KindInt, Int: n}, nil
	default:
		return Value{}, fmt.Errorf("unexpected %q where a value was expected", c)
	}
}

func (p *parser) str() (Value, error) {
	p.pos++ // the opening quote
	var b strings.Builder
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch c {
		case '"':
			p.pos++
			return Value{Kind: KindString, Str: b.String()}, nil
		case '\\':
			if p.pos+1 < len(p.src) {
				p.pos++
				c = p.src[p.pos]
			}
		case '\n':
			p.line++
		}
		b.WriteByte(c)
		p.pos++
	}
	return Value{}, fmt.Errorf("a string is not closed")
}

// Format writes s back as LVM2 metadata text, one item a line, sections
// indented by a tab as LVM2's export.c writes them. Comments are not kept.
func Format(s *Section) []byte {
	var b strings.Builder
	formatSection(&b, s, 0)
	return []byte(b.String())
}

func formatSection(b *strings.Builder, s *Section, depth int) {
	indent := strings.Repeat("\t", depth)
	for _, n := range s.Items {
		if n.Section != nil {
			fmt.Fprintf(b, "%s%s {\n", indent, n.Key)
			formatSection(b, n.Section, depth+1)
			fmt.Fprintf(b, "%s}\n", indent)
			continue
		}
		fmt.Fprintf(b, "%s%s = %s\n", indent, n.Key, formatValue(n.Value))
	}
}

func formatValue(v Value) string {
	switch v.Kind {
	case KindInt:
		return strconv.FormatInt(v.Int, 10)
	case KindFloat:
		return v.Str
	case KindString:
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
		return `"` + r.Replace(v.Str) + `"`
	default:
		parts := make([]string, len(v.Items))
		for i, it := range v.Items {
			parts[i] = formatValue(it)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
}
