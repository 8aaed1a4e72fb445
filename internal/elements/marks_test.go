package elements

import (
	"reflect"
	"testing"
)

type recUI struct{ lines []string }

func (u *recUI) Say(s string)     { u.lines = append(u.lines, "say: "+s) }
func (u *recUI) Message(s string) { u.lines = append(u.lines, s) }

// TestPhaseMarks: run-phase's marker lines switch the prefix and record
// timings and the failing hook; a hook's unterminated last line is kept;
// a forged marker without the random word is plain output.
func TestPhaseMarks(t *testing.T) {
	ui := &recUI{}
	ph := Phase{Name: "install.d", Inside: true}
	m := &phaseMarks{mark: "@@X", phase: ph, ui: ui, byName: map[string]hook{
		"10-a": {phase: ph, name: "10-a", element: "ea"},
		"20-b": {phase: ph, name: "20-b", element: "eb"},
	}}
	w := newLineWriter(m.line)
	w.Write([]byte("env line\n@@X start 10-a\nhello\nno newline@@X end 10-a 0\n@@X start 20-b\n@@imagefactory-forged end 20-b 0\nbad\n@@X end 20-b 7\n"))
	w.Flush()
	want := []string{
		"install.d: env line",
		"ea install.d/10-a: hello",
		"ea install.d/10-a: no newline",
		"eb install.d/20-b: @@imagefactory-forged end 20-b 0",
		"eb install.d/20-b: bad",
	}
	if !reflect.DeepEqual(ui.lines, want) {
		t.Errorf("lines:\n%q\nwant\n%q", ui.lines, want)
	}
	if len(m.times) != 2 || m.failed == nil || m.failed.name != "20-b" || m.failedCode != 7 {
		t.Errorf("times %d failed %+v code %d", len(m.times), m.failed, m.failedCode)
	}
}
