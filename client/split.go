package client

import (
	"strings"
	"unicode"
)

// Splitter cuts a stream of input lines into commands. A command ends at a
// semicolon outside quotes and comments; a command that carries no SQL
// (begin, commit, status, ...) also ends at the end of its line, while one
// that carries SQL (exec, execute, @NODE) goes on over further lines until
// its semicolon, as in psql. The zero value is ready to use.
type Splitter struct {
	buf strings.Builder
	// lines joined with spaces: what the history keeps of a command that
	// spanned several lines.
	hist []string
	sc   scanner
}

// scanner is the lexical state that survives the end of a line.
type scanner struct {
	quote   rune   // ' or " while inside such a literal, else 0
	escapes bool   // inside an E'...' literal, where backslash escapes
	dollar  string // the $tag$ of an open dollar-quoted literal
	block   int    // depth of nested /* */ comments
}

func (s *scanner) inside() bool { return s.quote != 0 || s.dollar != "" || s.block > 0 }

// Complete is one command cut from the input.
type Complete struct {
	// Text is the command without its final semicolon.
	Text string
	// History is the whole input that made it, on one line.
	History string
}

// Partial is what the splitter holds of a command not complete yet.
func (s *Splitter) Partial() string { return s.buf.String() }

// Feed adds one line (without its line break) and returns the commands it
// completed, in order.
func (s *Splitter) Feed(line string) []Complete {
	var out []Complete
	s.hist = append(s.hist, strings.TrimSpace(line))
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		sc := &s.sc
		switch {
		case sc.block > 0:
			if r == '*' && i+1 < len(rs) && rs[i+1] == '/' {
				sc.block--
				s.buf.WriteString("*/")
				i++
				continue
			}
			if r == '/' && i+1 < len(rs) && rs[i+1] == '*' {
				sc.block++
				s.buf.WriteString("/*")
				i++
				continue
			}
		case sc.quote != 0:
			if sc.escapes && r == '\\' && i+1 < len(rs) {
				s.buf.WriteRune(r)
				s.buf.WriteRune(rs[i+1])
				i++
				continue
			}
			if r == sc.quote {
				if i+1 < len(rs) && rs[i+1] == sc.quote { // doubled quote
					s.buf.WriteRune(r)
					s.buf.WriteRune(r)
					i++
					continue
				}
				sc.quote, sc.escapes = 0, false
			}
		case sc.dollar != "":
			if r == '$' && strings.HasPrefix(string(rs[i:]), sc.dollar) {
				s.buf.WriteString(sc.dollar)
				i += len([]rune(sc.dollar)) - 1
				sc.dollar = ""
				continue
			}
		default:
			switch {
			case r == ';':
				if c, ok := s.take(); ok {
					out = append(out, c)
				}
				continue
			case r == '-' && i+1 < len(rs) && rs[i+1] == '-':
				// A line comment: keep it (SQL may want it) and stop looking.
				s.buf.WriteString(string(rs[i:]))
				i = len(rs)
				continue
			case r == '/' && i+1 < len(rs) && rs[i+1] == '*':
				sc.block = 1
				s.buf.WriteString("/*")
				i++
				continue
			case r == '\'' || r == '"':
				sc.quote = r
				sc.escapes = r == '\'' && i > 0 && (rs[i-1] == 'E' || rs[i-1] == 'e') && (i < 2 || !isIdentRune(rs[i-2]))
			case r == '$':
				if tag, ok := dollarTag(rs, i); ok {
					sc.dollar = tag
					s.buf.WriteString(tag)
					i += len([]rune(tag)) - 1
					continue
				}
			}
		}
		s.buf.WriteRune(r)
	}
	if s.sc.inside() || (needsSemicolon(s.buf.String()) && strings.TrimSpace(stripComments(s.buf.String())) != "") {
		s.buf.WriteByte('\n')
		return out
	}
	if c, ok := s.take(); ok {
		out = append(out, c)
	}
	s.hist = s.hist[:0]
	return out
}

// Pending reports whether a command has begun but not ended: the caller
// shows a continuation prompt.
func (s *Splitter) Pending() bool {
	return s.sc.inside() || strings.TrimSpace(stripComments(s.buf.String())) != ""
}

// Flush ends the input: a command still open (a last SQL statement without
// its semicolon) is complete now.
func (s *Splitter) Flush() (Complete, bool) {
	s.sc = scanner{}
	c, ok := s.take()
	s.hist = s.hist[:0]
	return c, ok
}

// Reset drops whatever was typed of the current command (Ctrl-C).
func (s *Splitter) Reset() {
	s.buf.Reset()
	s.hist = s.hist[:0]
	s.sc = scanner{}
}

// take returns the buffered command, if it holds more than blanks and
// comments, and empties the buffer.
func (s *Splitter) take() (Complete, bool) {
	text := strings.TrimSpace(s.buf.String())
	s.buf.Reset()
	hist := strings.Join(nonEmpty(s.hist), " ")
	if strings.TrimSpace(stripComments(text)) == "" {
		return Complete{}, false
	}
	return Complete{Text: text, History: hist}, true
}

func nonEmpty(ss []string) []string {
	out := ss[:0:0]
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// needsSemicolon reports whether the command begun in text carries SQL and
// so only ends at a semicolon.
func needsSemicolon(text string) bool {
	w := firstWord(stripComments(text))
	return strings.HasPrefix(w, "@") || w == "exec" || w == "execute"
}

func firstWord(text string) string {
	f := strings.Fields(text)
	if len(f) == 0 {
		return ""
	}
	return strings.ToLower(f[0])
}

// stripComments removes leading comment-only lines and -- comments that
// start a line, enough to tell a blank command from a real one.
func stripComments(text string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "--") {
			continue
		}
		b.WriteString(line)
	}
	out := strings.TrimSpace(b.String())
	for strings.HasPrefix(out, "/*") {
		end := strings.Index(out, "*/")
		if end < 0 {
			return ""
		}
		out = strings.TrimSpace(out[end+2:])
	}
	return out
}

// dollarTag recognises the opening of a dollar-quoted literal at rs[i]
// ($$ or $tag$) and returns the delimiter. A positional parameter ($1) or a
// dollar inside an identifier is not one.
func dollarTag(rs []rune, i int) (string, bool) {
	if i > 0 && isIdentRune(rs[i-1]) {
		return "", false
	}
	j := i + 1
	for j < len(rs) && rs[j] != '$' {
		r := rs[j]
		if !(r == '_' || unicode.IsLetter(r) || (j > i+1 && unicode.IsDigit(r))) {
			return "", false
		}
		j++
	}
	if j >= len(rs) {
		return "", false
	}
	return string(rs[i : j+1]), true
}

func isIdentRune(r rune) bool {
	return r == '_' || r == '$' || unicode.IsLetter(r) || unicode.IsDigit(r)
}
