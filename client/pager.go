package client

import (
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/mattn/go-runewidth"
	"golang.org/x/term"
)

// The modes of a Pager (\pset pager).
const (
	PagerOn     = "on" // when the output does not fit the terminal
	PagerOff    = "off"
	PagerAlways = "always"
)

// Pager shows output that does not fit the terminal through a pager
// program, as psql does when its output is a terminal.
type Pager struct {
	Mode string
	// Command runs with sh -c and reads the output on its standard input;
	// "" means there is no pager.
	Command string
	// Term is the terminal the output goes to.
	Term *os.File
}

// NewPager returns a pager for output to the terminal term, running the
// command DefaultPagerCommand names.
func NewPager(term *os.File) *Pager {
	return &Pager{Mode: PagerOn, Command: DefaultPagerCommand(), Term: term}
}

// DefaultPagerCommand is $TPCD_PAGER, else $PAGER, else less (or more
// where less is missing). A variable that is set but empty means no pager,
// as for psql's PSQL_PAGER and PAGER.
func DefaultPagerCommand() string {
	for _, name := range []string{"TPCD_PAGER", "PAGER"} {
		if v, ok := os.LookupEnv(name); ok {
			return strings.TrimSpace(v)
		}
	}
	for _, prog := range []string{"less", "more"} {
		if _, err := exec.LookPath(prog); err == nil {
			return prog
		}
	}
	return ""
}

// show writes text to out, or through the pager when there is one, it is
// on and the text does not fit the terminal (or it is always on). A pager
// that cannot be run is passed over: the text is written as it is.
func (pg *Pager) show(out io.Writer, text string) {
	if pg == nil || pg.Mode == PagerOff || pg.Command == "" || text == "" || !pg.needed(text) {
		io.WriteString(out, text)
		return
	}
	cmd := exec.Command("sh", "-c", pg.Command)
	cmd.Stdin = strings.NewReader(text)
	cmd.Stdout, cmd.Stderr = pg.Term, pg.Term
	cmd.Env = os.Environ()
	if _, ok := os.LookupEnv("LESS"); !ok {
		// less: quit at once if it fits after all (F), keep colours (R)
		// and leave the screen as it was (X), as git sets it. Not S: with
		// F, less would quit on chopped lines that fit and hide the rest.
		cmd.Env = append(cmd.Env, "LESS=FRX")
	}
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		io.WriteString(out, text)
	}
}

// needed reports whether text takes more rows of the terminal than it
// has, counting the rows a line too wide for it wraps onto. A line as
// wide as the terminal takes one row.
func (pg *Pager) needed(text string) bool {
	if pg.Mode == PagerAlways {
		return true
	}
	cols, rows, err := term.GetSize(int(pg.Term.Fd()))
	if err != nil || cols <= 0 || rows <= 0 {
		return false
	}
	used := 0
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		used += max(1, (runewidth.StringWidth(l)+cols-1)/cols)
	}
	// The prompt takes the last row.
	return used >= rows
}
