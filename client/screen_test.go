package client

import (
	"strconv"
	"strings"
	"testing"
)

// screen is a minimal terminal emulator: enough of VT100/xterm to show
// what a person would see of a line-editing program (printable text,
// carriage return, line feed, backspace, and the cursor-movement and
// erase sequences liner emits). It keeps every line ever written, like a
// terminal with endless scrollback.
type screen struct {
	cols     int
	lines    [][]rune
	row, col int
	esc      []byte // an escape sequence being read
}

func newScreen(cols int) *screen { return &screen{cols: cols, lines: [][]rune{nil}} }

func (s *screen) Write(p []byte) (int, error) {
	for _, r := range string(p) {
		s.put(r)
	}
	return len(p), nil
}

func (s *screen) put(r rune) {
	if s.esc != nil {
		s.escape(r)
		return
	}
	switch r {
	case 0x1b:
		s.esc = []byte{}
	case '\r':
		s.col = 0
	case '\n':
		s.row++
		for len(s.lines) <= s.row {
			s.lines = append(s.lines, nil)
		}
	case '\b':
		if s.col > 0 {
			s.col--
		}
	case '\a', 0:
	case '\t':
		s.col = min((s.col/8+1)*8, s.cols-1)
	default:
		if s.col >= s.cols { // autowrap
			s.col = 0
			s.put('\n')
		}
		line := s.lines[s.row]
		for len(line) <= s.col {
			line = append(line, ' ')
		}
		line[s.col] = r
		s.lines[s.row] = line
		s.col++
	}
}

// escape reads ESC [ params final; other escapes are two bytes long.
func (s *screen) escape(r rune) {
	if len(s.esc) == 0 && r != '[' {
		s.esc = nil // ESC x: nothing liner sends that matters here
		return
	}
	s.esc = append(s.esc, byte(r))
	if len(s.esc) == 1 || !(r >= 0x40 && r <= 0x7e) {
		return
	}
	params := string(s.esc[1 : len(s.esc)-1])
	s.esc = nil
	n := 1
	if v, err := strconv.Atoi(strings.TrimPrefix(params, "?")); err == nil {
		n = v
	}
	line := s.lines[s.row]
	switch r {
	case 'A':
		s.row = max(s.row-n, 0)
	case 'B':
		s.row += n
		for len(s.lines) <= s.row {
			s.lines = append(s.lines, nil)
		}
	case 'C':
		s.col = min(s.col+n, s.cols-1)
	case 'D':
		s.col = max(s.col-n, 0)
	case 'G':
		s.col = min(max(n-1, 0), s.cols-1)
	case 'K':
		switch params {
		case "", "0":
			if s.col < len(line) {
				s.lines[s.row] = line[:s.col]
			}
		case "1":
			for i := 0; i < s.col && i < len(line); i++ {
				line[i] = ' '
			}
		case "2":
			s.lines[s.row] = nil
		}
	case 'J':
		if params == "2" {
			s.lines, s.row, s.col = [][]rune{nil}, 0, 0
		}
	case 'H':
		s.row, s.col = 0, 0
	}
}

// String is the screen as text, trailing blanks trimmed from each line.
func (s *screen) String() string {
	out := make([]string, len(s.lines))
	for i, l := range s.lines {
		out[i] = strings.TrimRight(string(l), " ")
	}
	return strings.TrimRight(strings.Join(out, "\n"), "\n")
}

// current is the line the cursor is on.
func (s *screen) current() string { return strings.TrimRight(string(s.lines[s.row]), " ") }

func TestScreen(t *testing.T) {
	s := newScreen(40)
	s.Write([]byte("tpcd> sel\x1b[0K\x1b[10G\rtpcd> status\x1b[0K\x1b[13G\r\nCOMMIT 1\r\n"))
	s.Write([]byte("abc\bX\r\n\x1b[1Aover\x1b[K\n"))
	if got, want := s.String(), "tpcd> status\nCOMMIT 1\nover"; got != want {
		t.Fatalf("screen %q, want %q", got, want)
	}
	if s.current() != "" {
		t.Fatalf("cursor line %q, want an empty one", s.current())
	}
}
