package elements

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// newMark is a per-phase random word: a hook cannot forge the lines that
// say where hooks start and end.
func newMark() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "@@imagefactory-" + hex.EncodeToString(b)
}

// phaseMarks follows a phase's combined output: marker lines switch the
// current hook, other lines are shown with its prefix.
type phaseMarks struct {
	mark       string
	phase      Phase
	byName     map[string]hook
	ui         UI
	cur        *hook
	start      time.Time
	times      []timing
	failed     *hook
	failedCode int
}

func (m *phaseMarks) line(l string) {
	if i := strings.Index(l, m.mark); i >= 0 {
		if i > 0 {
			m.show(l[:i]) // a hook's last line without a newline
		}
		f := strings.Fields(l[i+len(m.mark):])
		switch {
		case len(f) == 2 && f[0] == "start":
			h := m.byName[f[1]]
			if h.name == "" {
				h = hook{phase: m.phase, name: f[1]}
			}
			m.cur, m.start = &h, time.Now()
		case len(f) == 3 && f[0] == "end" && m.cur != nil:
			m.times = append(m.times, timing{*m.cur, time.Since(m.start)})
			if code, _ := strconv.Atoi(f[2]); code != 0 {
				m.failed, m.failedCode = m.cur, code
			}
			m.cur = nil
		}
		return
	}
	m.show(l)
}

func (m *phaseMarks) show(l string) {
	if m.cur == nil {
		m.ui.Message(fmt.Sprintf("%s: %s", m.phase.Name, l))
		return
	}
	m.ui.Message(fmt.Sprintf("%s %s/%s: %s", m.cur.element, m.phase.Name, m.cur.name, l))
}

// finish closes the timing of a hook cut short (killed, lost connection).
func (m *phaseMarks) finish() {
	if m.cur != nil && m.failed == nil {
		m.times = append(m.times, timing{*m.cur, time.Since(m.start)})
	}
}
